"""``mailpipe dlq``: list, show, replay and purge dead letters (see :mod:`pipeline.dlq`).

``replay`` and ``purge`` refuse to run without ``--id`` or a filter, so nobody replays
everything by accident; both take ``--dry-run``. ``purge`` also needs ``--yes``. ``replay``
exits with status 1 when it refused some of the selected rows (each with its reason).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated

import typer
from aio_pika.exceptions import AMQPError
from faststream.rabbit import RabbitBroker
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline import dlq
from pipeline.cli.main import fail, settings_or_exit
from pipeline.db.engine import create_engine, create_sessionmaker
from pipeline.db.models import DeadLetter
from pipeline.errors import BrokerUnavailable, StoreUnavailable
from pipeline.messaging import Bus, create_broker, declare_topology
from pipeline.settings import Settings
from pipeline.topology import COMMANDS

__all__ = ["list_command", "purge_command", "register", "replay_command", "show_command"]

Ids = Annotated[list[int] | None, typer.Option("--id", help="A dead letter id; repeat for several.")]
Reason = Annotated[str | None, typer.Option("--reason", help="Only this reason, e.g. invalid-message.")]
Step = Annotated[str | None, typer.Option("--step", help="Only this step, e.g. ingest or send:attachment.")]
OlderThan = Annotated[str | None, typer.Option("--older-than", help="Created before this long ago (2h, 7d).")]
NewerThan = Annotated[str | None, typer.Option("--newer-than", help="Created within this long (30m, 1d).")]
Sender = Annotated[str | None, typer.Option("--sender", help="Only this sender mailbox.")]
Limit = Annotated[int | None, typer.Option("--limit", help="At most this many rows.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; change nothing.")]


def _selection(
    *,
    ids: list[int] | None = None,
    reason: str | None,
    step: str | None,
    older_than: str | None,
    newer_than: str | None,
    sender: str | None,
    limit: int | None,
    include_purged: bool = False,
) -> dlq.Selection:
    older = _age("--older-than", older_than)
    newer = _age("--newer-than", newer_than)
    if limit is not None and limit < 1:
        raise fail("--limit must be at least 1")
    return dlq.Selection(tuple(ids or ()), reason, step, older, newer, sender, limit, include_purged)


def _targeted(selection: dlq.Selection) -> dlq.Selection:
    """Replay and purge act on an id or a filter, never on "everything" by omission."""
    if not selection.has_criteria:
        raise fail("give --id or a filter (--reason, --step, --older-than, --newer-than, --sender)")
    return selection


def _age(option: str, text: str | None) -> timedelta | None:
    if text is None:
        return None
    try:
        return dlq.parse_age(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from exc


@asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


class _Republisher:
    """Connects to RabbitMQ on first use only: most replays re-publish nothing."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._broker: RabbitBroker | None = None
        self._bus: Bus | None = None

    async def __call__(self, body: bytes, routing_key: str, message_id: str) -> None:
        if self._bus is None:
            self._broker = create_broker(self._settings)
            try:
                await self._broker.connect()
                await declare_topology(self._settings.amqp_url)
            except (AMQPError, ConnectionError, OSError) as exc:
                raise BrokerUnavailable(f"cannot reach RabbitMQ: {exc!r}") from exc
            self._bus = Bus(self._broker)
        await self._bus.publish(body, exchange=COMMANDS.name, routing_key=routing_key, message_id=message_id)

    async def aclose(self) -> None:
        if self._broker is not None:
            await self._broker.stop()


def _console() -> Console:
    # Piped output (files, grep, tests) gets wide rows instead of cells wrapped at 80 columns.
    return Console() if sys.stdout.isatty() else Console(width=240)


def _when(row: DeadLetter) -> str:
    return f"{row.created_at:%Y-%m-%d %H:%M:%S}"


def _list_table(rows: list[DeadLetter]) -> Table:
    table = Table("id", "created", "step", "reason", "attempts", "mailbox", "publisher_message_id", "replayed?")
    for r in rows:
        replayed = "yes" if r.replayed_at is not None else "no"
        table.add_row(
            str(r.id), _when(r), r.step, r.reason, str(r.attempts), r.mailbox or "",
            r.publisher_message_id or "", replayed + (" (purged)" if r.purged_at is not None else ""),
        )  # fmt: skip
    return table


async def _replay(settings: Settings, selection: dlq.Selection, dry_run: bool) -> list[dlq.Plan]:
    republisher = _Republisher(settings)
    try:
        async with _sessions(settings) as sessions:
            return await dlq.replay(sessions, settings, selection, republish=republisher, dry_run=dry_run)
    finally:
        await republisher.aclose()


def _show(row: DeadLetter) -> None:
    for name in ("id", "created_at", "step", "reason", "attempts", "mailbox", "publisher_message_id",
                 "incoming_email_id", "replayed_at", "purged_at"):  # fmt: skip
        value = getattr(row, name)
        typer.echo(f"{name}: {'' if value is None else value}")
    typer.echo("last_error:")
    typer.echo(row.last_error)
    typer.echo("raw_body:")
    try:
        typer.echo(json.dumps(json.loads(row.raw_body or ""), indent=2, ensure_ascii=False))
    except ValueError:
        typer.echo(row.raw_body if row.raw_body is not None else "(none stored)")


def list_command(
    *, reason: Reason = None, step: Step = None, older_than: OlderThan = None,
    newer_than: NewerThan = None, sender: Sender = None, limit: Limit = 50,
    include_purged: Annotated[bool, typer.Option("--all", help="Include purged rows.")] = False,
) -> None:  # fmt: skip
    """List dead letters, newest first."""
    selection = _selection(
        reason=reason,
        step=step,
        older_than=older_than,
        newer_than=newer_than,
        sender=sender,
        limit=limit,
        include_purged=include_purged,
    )
    settings = settings_or_exit()
    try:
        rows = asyncio.run(_run_find(settings, selection))
    except StoreUnavailable as exc:
        raise fail(str(exc)) from exc
    _console().print(_list_table(rows))


def show_command(
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", help="The dead letter id.")],
) -> None:
    """Show one dead letter in full, with its last error and raw body."""
    settings = settings_or_exit()
    try:
        row = asyncio.run(_run_get(settings, dead_letter_id))
    except StoreUnavailable as exc:
        raise fail(str(exc)) from exc
    if row is None:
        raise fail(f"no dead letter with id {dead_letter_id}")
    _show(row)


def replay_command(
    *, ids: Ids = None, reason: Reason = None, step: Step = None, older_than: OlderThan = None,
    newer_than: NewerThan = None, sender: Sender = None, limit: Limit = None, dry_run: DryRun = False,
) -> None:  # fmt: skip
    """Put failed emails back in the schedule, or re-publish bodies that validate now."""
    selection = _targeted(
        _selection(
            ids=ids, reason=reason, step=step, older_than=older_than, newer_than=newer_than, sender=sender, limit=limit
        )
    )
    settings = settings_or_exit()
    try:
        plans = asyncio.run(_replay(settings, selection, dry_run))
    except (StoreUnavailable, BrokerUnavailable) as exc:
        raise fail(str(exc)) from exc
    table = Table("id", "action", "detail")
    for item in plans:
        table.add_row(str(item.dead_letter_id), str(item.action), item.detail)
    console = _console()
    console.print(table)
    refused = sum(item.action == dlq.Action.REFUSED for item in plans)
    prefix = "dry run, nothing changed: would replay" if dry_run else "replayed"
    console.print(f"{prefix} {len(plans) - refused}, refused {refused}")
    raise typer.Exit(1 if refused else 0)


def purge_command(
    *, ids: Ids = None, reason: Reason = None, step: Step = None, older_than: OlderThan = None,
    newer_than: NewerThan = None, sender: Sender = None, limit: Limit = None, dry_run: DryRun = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm the purge.")] = False,
) -> None:  # fmt: skip
    """Mark dead letters purged (rows are kept for audit; RabbitMQ's copies are untouched)."""
    selection = _targeted(
        _selection(
            ids=ids, reason=reason, step=step, older_than=older_than, newer_than=newer_than, sender=sender, limit=limit
        )
    )
    if not yes and not dry_run:
        raise fail("purge needs --yes to confirm (or --dry-run to list what it would purge)")
    settings = settings_or_exit()
    try:
        rows = asyncio.run(_run_purge(settings, selection, dry_run))
    except StoreUnavailable as exc:
        raise fail(str(exc)) from exc
    console = _console()
    console.print(_list_table(rows))
    what = "would purge" if dry_run else "purged"
    console.print(
        f"{'dry run, nothing changed: ' if dry_run else ''}{what} {len(rows)} dead letters "
        "(rows are kept; copies in RabbitMQ's mail.dead-letter are not touched)"
    )


def register(app: typer.Typer) -> None:
    """Add ``mailpipe dlq list|show|replay|purge`` to ``app``."""
    dlq_app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)
    dlq_app.command("list")(list_command)
    dlq_app.command("show")(show_command)
    dlq_app.command("replay")(replay_command)
    dlq_app.command("purge")(purge_command)
    app.add_typer(dlq_app, name="dlq")


async def _run_find(settings: Settings, selection: dlq.Selection) -> list[DeadLetter]:
    async with _sessions(settings) as sessions:
        return await dlq.find(sessions, selection)


async def _run_get(settings: Settings, dead_letter_id: int) -> DeadLetter | None:
    async with _sessions(settings) as sessions:
        return await dlq.get(sessions, dead_letter_id)


async def _run_purge(settings: Settings, selection: dlq.Selection, dry_run: bool) -> list[DeadLetter]:
    async with _sessions(settings) as sessions:
        return await dlq.purge(sessions, selection, dry_run=dry_run)
