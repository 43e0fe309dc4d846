"""The ``mailpipe`` command. Every subcommand builds :class:`~pipeline.settings.Settings` once.

Errors a user can fix (bad settings, bad arguments) print one line naming the problem and exit
with status 2; they never print a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import ConfigError
from pipeline.settings import ROLES, Role, Settings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="mailpipe: send email exactly once through Microsoft Graph, fed from RabbitMQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
schemas_app = typer.Typer(help="The publisher contract files in schemas/.", no_args_is_help=True)
topology_app = typer.Typer(help="The RabbitMQ topology.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(schemas_app, name="schemas")
app.add_typer(topology_app, name="topology")


def settings_or_exit(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@app.command()
def run(
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help=f"Role(s) to run; repeat for several. Default: all of {', '.join(ROLES)}."),
    ] = None,
) -> None:
    """Run mailpipe's consumers (all roles in one process unless --role picks some)."""
    from pipeline.app import create_app  # noqa: PLC0415 - keeps `mailpipe --help` fast
    from pipeline.eventloop import run as run_on_loop  # noqa: PLC0415
    from pipeline.observability.logs import configure_logging  # noqa: PLC0415

    chosen = role or list(ROLES)
    bad = [r for r in chosen if r not in ROLES]
    if bad:
        raise fail(f"unknown role {', '.join(bad)}; choose from {', '.join(ROLES)}")
    settings = settings_or_exit()
    configure_logging(settings)
    roles: list[Role] = [r for r in ROLES if r in chosen]
    try:
        application, _ = create_app(settings, roles)
        run_on_loop(application.run, settings.event_loop)
    except ConfigError as exc:
        raise fail(str(exc)) from exc


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply database migrations (safe to run repeatedly)."""
    from pipeline.db.migrate import upgrade  # noqa: PLC0415

    settings = settings_or_exit()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the files.")] = Path("schemas"),
) -> None:
    """Write the JSON Schemas and the AsyncAPI document generated from the message models."""
    from pipeline.contract import export  # noqa: PLC0415

    for path in export(directory):
        typer.echo(f"wrote {path}")


@topology_app.command("export")
def topology_export(
    path: Annotated[Path, typer.Option("--path", help="Output file.")] = Path("rabbitmq/definitions.json"),
) -> None:
    """Write the RabbitMQ definitions (exchanges, queues, bindings) for the management plugin."""
    from pipeline.topology import definitions  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(definitions(), indent=2) + "\n")
    typer.echo(f"wrote {path}")


@app.command("graph-emulator")
def graph_emulator(
    *,
    host: Annotated[str, typer.Option(help="Bind address (loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8081,
    token: Annotated[str, typer.Option(help="Bearer token the emulator accepts.")] = "emulator-token",  # noqa: S107
    sent_items_delay_s: Annotated[float, typer.Option(min=0.0, help="Delay before Sent Items shows a copy.")] = 0.5,
    latency_s: Annotated[float, typer.Option(min=0.0, help="Added latency per Graph call.")] = 0.0,
    allow_public: Annotated[
        bool, typer.Option("--allow-public", help="Allow a non-loopback bind (containers only).")
    ] = False,
) -> None:
    """Run the built-in Microsoft Graph emulator (for the demo and tests)."""
    from pipeline.emulator import EmulatorConfig  # noqa: PLC0415
    from pipeline.emulator import run as run_emulator  # noqa: PLC0415

    config = EmulatorConfig(static_token=token, sent_items_delay_s=sent_items_delay_s, latency_s=latency_s)
    try:
        run_emulator(config, host=host, port=port, allow_public=allow_public)
    except ValueError as exc:
        raise fail(str(exc)) from exc


def _register_optional_commands() -> None:
    from pipeline.cli import demo, dlq, limits, ops  # noqa: PLC0415

    demo.register(app)
    dlq.register(app)
    limits.register(app)
    ops.register(app)


def main() -> None:
    _register_optional_commands()
    app()
