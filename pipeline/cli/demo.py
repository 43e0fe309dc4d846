"""``mailpipe demo``: the whole pipeline on one machine, with the built-in Graph emulator.

Starts the emulator (unless real Graph credentials are configured), applies migrations, runs
every role in this process, publishes a mix of emails (plain, small inline files, large files
fetched by URL) and shows progress until each one is backed up, failed or cancelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections import Counter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

__all__ = ["demo_emails", "register"]

FINAL = ("backed_up", "failed", "cancelled")
#: The built-in emulator's bearer token: a fixed test value, not a secret.
DEMO_TOKEN = "demo-token"  # noqa: S105


def demo_emails(count: int, files_url: str | None, run_id: str) -> list[dict[str, Any]]:
    """A mix: 60% plain, 20% a small inline file, 20% a large file by URL (when a file source exists)."""
    emails = []
    for n in range(count):
        email: dict[str, Any] = {
            "publisher_message_id": f"demo-{run_id}-{n}",
            "from": f"sender{n % 3}@contoso.example",
            "to": [f"customer{n}@fabrikam.example"],
            "subject": f"Your invoice #{n}",
            "body": {"contentType": "html", "content": f"<p>Invoice {n} is attached.</p>"},
            "priority": 1 + n % 10,
            "metadata": {"demo": True},
        }
        kind = n % 5
        if kind == 3:
            data = f"invoice {n}\n".encode() * 100
            email["attachments"] = [
                {
                    "name": f"invoice-{n}.txt",
                    "size": len(data),
                    "contentType": "text/plain",
                    "contentBytes": base64.b64encode(data).decode(),
                }
            ]
        elif kind == 4 and files_url:
            size = 5 * 1024 * 1024 + n
            email["attachments"] = [
                {
                    "name": f"scan-{n}.pdf",
                    "size": size,
                    "contentType": "application/pdf",
                    "urlOrId": f"{files_url}/{size}/{n}",
                }
            ]
        emails.append(email)
    return emails


async def _run_demo(count: int, timeout_s: float) -> bool:
    from pipeline.app import create_app  # noqa: PLC0415
    from pipeline.cli.main import settings_or_exit  # noqa: PLC0415
    from pipeline.db.models import IncomingEmail  # noqa: PLC0415
    from pipeline.emulator import EmulatorConfig, serve_in_thread  # noqa: PLC0415
    from pipeline.observability.logs import configure_logging  # noqa: PLC0415
    from pipeline.topology import COMMANDS  # noqa: PLC0415

    console = Console()
    settings = settings_or_exit(auto_migrate=True, log_level="WARNING")
    configure_logging(settings)
    with contextlib.ExitStack() as stack:
        files_url = None
        if settings.graph_static_token is None and settings.graph_client_id is None:
            emulator = stack.enter_context(
                serve_in_thread(EmulatorConfig(static_token=DEMO_TOKEN, sent_items_delay_s=0.5))
            )
            settings = settings_or_exit(
                auto_migrate=True,
                log_level="WARNING",
                graph_base_url=emulator.base_url,
                graph_static_token=DEMO_TOKEN,
                graph_sent_lookup_deadline_s=10.0,
            )
            files_url = f"{emulator.root_url}/_emulator/files"
            console.print(f"Graph emulator on {emulator.root_url}")
        app, ctx = create_app(settings)
        run_id = uuid.uuid4().hex[:8]
        emails = demo_emails(count, files_url, run_id)
        async with app:
            for email in emails:
                await ctx.bus.publish(
                    _json(email),
                    exchange=COMMANDS.name,
                    routing_key="send-email",
                    message_id=email["publisher_message_id"],
                )
            keys = [e["publisher_message_id"] for e in emails]
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            statuses: Counter[str] = Counter()
            with Progress(*columns, console=console) as progress:
                task = progress.add_task("emails backed up", total=len(keys))
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout_s
                while loop.time() < deadline:
                    async with ctx.sessions() as session:
                        rows = await session.execute(
                            select(IncomingEmail.status, func.count())
                            .where(IncomingEmail.publisher_message_id.in_(keys))
                            .group_by(IncomingEmail.status)
                        )
                        statuses = Counter({str(status): int(n) for status, n in rows.all()})
                    progress.update(
                        task,
                        completed=sum(statuses[s] for s in FINAL),
                        description=f"emails final ({statuses['backed_up']} backed up)",
                    )
                    if sum(statuses[s] for s in FINAL) == len(keys):
                        break
                    await asyncio.sleep(0.5)
        table = Table("status", "emails")
        for status, n in sorted(statuses.items()):
            table.add_row(status, str(n))
        console.print(table)
        return statuses["backed_up"] == len(keys)


def _json(email: dict[str, Any]) -> bytes:
    import json  # noqa: PLC0415

    return json.dumps(email).encode()


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        emails: Annotated[int, typer.Option(min=1, max=10_000, help="How many emails to send.")] = 25,
        timeout_s: Annotated[float, typer.Option(min=1.0, help="Give up after this many seconds.")] = 300.0,
    ) -> None:
        """Run the whole pipeline locally against the Graph emulator and show progress."""
        ok = asyncio.run(_run_demo(emails, timeout_s))
        raise typer.Exit(0 if ok else 1)
