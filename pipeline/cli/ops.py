"""Operator commands: ``mailpipe keys rotate``, ``mailpipe backup get``, ``mailpipe retention run``.

Exit status: 0 done; 1 the data is not what it should be (a backup that fails authentication,
rows rotation could not open, a backup that does not exist); 2 bad settings or arguments.
Messages name the row and the problem, never a key or a message's content.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.settings import Settings

__all__ = ["register"]

T = TypeVar("T")


def _settings() -> Settings:
    from pipeline.cli.main import settings_or_exit  # noqa: PLC0415 - main imports this module lazily

    return settings_or_exit()


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@asynccontextmanager
async def _sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    from pipeline.db.engine import create_engine, create_sessionmaker  # noqa: PLC0415

    engine = create_engine(settings)
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def _run(settings: Settings, job: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    from pipeline.errors import ConfigError, TransientError  # noqa: PLC0415

    async def main() -> T:
        async with _sessions(settings) as sessions:
            return await job(sessions)

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise _fail(str(exc), 2) from exc
    except TransientError as exc:
        raise _fail(str(exc), 1) from exc


def keys_rotate(
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000, help="Rows per transaction.")] = 200,
) -> None:
    """Re-encrypt every backup not sealed with the current (first) key; safe to re-run."""
    from pipeline.backups import rotate  # noqa: PLC0415
    from pipeline.crypto import load_keyring  # noqa: PLC0415
    from pipeline.errors import ConfigError  # noqa: PLC0415

    settings = _settings()
    try:
        keyring = load_keyring(settings)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from exc
    if keyring is None:
        raise _fail("no encryption keys: set MAILPIPE_ENCRYPTION_KEYS or MAILPIPE_ENCRYPTION_KEYS_FILE", 2)
    report = _run(settings, lambda sessions: rotate(sessions, keyring, batch_size=batch_size))
    typer.echo(f"re-encrypted {report.rotated} backup(s) with key {keyring.current!r}")
    for backup_id, why in report.failed:
        typer.echo(f"error: backup {backup_id} was not re-encrypted: {why}", err=True)
    if report.failed:
        raise typer.Exit(1)


def backup_get(
    ident: Annotated[str, typer.Argument(help="The email's incoming_email_id or the Graph message id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the .eml file.")],
) -> None:
    """Decrypt (checking its authentication tag), decompress and write one backup as .eml.

    The MIME is written to ``OUT.partial`` piece by piece and renamed to ``OUT`` only once the
    tag and the checksum have been checked; on failure nothing is left at ``OUT``.
    """
    from pipeline.backups import find_backup, read_backup  # noqa: PLC0415
    from pipeline.crypto import load_keyring  # noqa: PLC0415
    from pipeline.errors import ConfigError, MailpipeError  # noqa: PLC0415

    settings = _settings()
    try:
        keyring = load_keyring(settings)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from exc
    row = _run(settings, lambda sessions: find_backup(sessions, ident))
    if row is None:
        raise _fail(f"no backup for {ident!r}", 1)
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as file:
            size = _run(settings, lambda sessions: read_backup(sessions, row, keyring, file.write))
        partial.replace(out)
    except OSError as exc:
        raise _fail(f"cannot write {out}: {exc}", 1) from exc
    except MailpipeError as exc:  # what _run does not turn into an exit itself: tampered, corrupt
        raise _fail(f"{exc} (the stored backup was altered or belongs to another row)", 1) from exc
    finally:
        partial.unlink(missing_ok=True)  # gone already when renamed
    typer.echo(f"wrote {size} bytes to {out}")


def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted or cleared.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000, help="Rows per transaction.")] = 500,
) -> None:
    """Delete old backups and events and clear old payloads, as the retention settings say."""
    from pipeline.retention import run_retention  # noqa: PLC0415

    settings = _settings()
    report = _run(settings, lambda sessions: run_retention(sessions, settings, dry_run=dry_run, batch_size=batch_size))
    verb = "would be" if dry_run else "were"
    typer.echo(
        f"{report.backups} backup(s) {verb} deleted (older than {settings.backup_retention_days:g} days), "
        f"{report.payloads} payload(s) {verb} cleared (older than {settings.payload_retention_days:g} days), "
        f"{report.events} event(s) {verb} deleted (older than {settings.event_retention_days:g} days)"
    )


def register(app: typer.Typer) -> None:
    """Add ``keys rotate``, ``backup get`` and ``retention run`` to ``app``."""
    keys_app = typer.Typer(help="Encryption keys of stored backups.", no_args_is_help=True)
    keys_app.command("rotate")(keys_rotate)
    backup_app = typer.Typer(help="Stored copies of sent emails.", no_args_is_help=True)
    backup_app.command("get")(backup_get)
    retention_app = typer.Typer(help="Deleting what is older than the retention settings.", no_args_is_help=True)
    retention_app.command("run")(retention_run)
    app.add_typer(keys_app, name="keys")
    app.add_typer(backup_app, name="backup")
    app.add_typer(retention_app, name="retention")
