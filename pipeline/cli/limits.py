"""``mailpipe limits``: show and change the shared Graph limiter's buckets while mailpipe runs.

Running processes read a bucket's row on every grant and sleep at most ``limiter_refresh_s``
between grants, so a change here applies everywhere within that interval. A mailbox without a
row uses the settings' defaults (``MAILPIPE_MAILBOX_*``); its row is created on first use, and
from then on the row wins. ``reset`` deletes the row so the defaults apply again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.cli.main import fail, settings_or_exit
from pipeline.db import buckets
from pipeline.db.buckets import GLOBAL_KEY, BucketDefaults, BucketView, mailbox_key
from pipeline.db.engine import create_engine
from pipeline.errors import StoreUnavailable
from pipeline.settings import Settings

__all__ = ["change_limits", "read_limits", "register", "reset_limits"]

MailboxOption = Annotated[str | None, typer.Option("--mailbox", help="The sender mailbox (address).")]
GlobalOption = Annotated[bool, typer.Option("--global", help="The overall bucket shared by all mailboxes.")]


@asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


async def read_limits(settings: Settings) -> list[BucketView]:
    """Every bucket row, with tokens available now, pause left and calls in flight."""
    async with _engine(settings) as engine, engine.begin() as connection:
        return await buckets.show(connection)


async def change_limits(
    settings: Settings,
    key: str,
    *,
    rate_per_s: float | None = None,
    burst: int | None = None,
    max_concurrency: int | None = None,
    resume: bool = False,
) -> BucketView:
    """Apply a change to bucket ``key`` (created from defaults if missing); return the new row."""
    async with _engine(settings) as engine:
        async with engine.begin() as connection:
            await buckets.set_limits(
                connection,
                key,
                BucketDefaults.for_key(settings, key),
                rate_per_s=rate_per_s,
                burst=burst,
                max_concurrency=max_concurrency,
                resume=resume,
            )
        async with engine.begin() as connection:
            return next(view for view in await buckets.show(connection) if view.key == key)


async def reset_limits(settings: Settings, key: str) -> bool:
    """Delete bucket ``key`` so the defaults apply again; False if it had no row."""
    async with _engine(settings) as engine, engine.begin() as connection:
        return await buckets.reset(connection, key)


def _key(mailbox: str | None, is_global: bool) -> str:
    if (mailbox is None) == (not is_global):
        raise fail("give exactly one of --mailbox ADDRESS and --global")
    if mailbox is None:
        return GLOBAL_KEY
    if "@" not in mailbox:
        raise fail(f"--mailbox: {mailbox!r} is not a mailbox address")
    return mailbox_key(mailbox)


def _check(rate_per_s: float | None, burst: int | None, concurrency: int | None, is_global: bool) -> str | None:
    if rate_per_s is not None and not rate_per_s > 0:
        return "--rate-per-s must be greater than 0"
    if burst is not None and burst < 1:
        return "--burst must be at least 1"
    if concurrency is not None and concurrency < 1:
        return "--concurrency must be at least 1"
    if concurrency is not None and is_global:
        return "--concurrency applies to mailboxes only (Outlook caps concurrency per mailbox)"
    return None


def _print(views: list[BucketView], settings: Settings) -> None:
    table = Table("bucket", "rate/s", "burst", "concurrency", "tokens now", "paused for", "in flight")
    for v in views:
        table.add_row(
            "* (global)" if v.key == GLOBAL_KEY else v.key,
            f"{v.rate_per_s:g}",
            str(v.burst),
            str(v.max_concurrency) if v.max_concurrency > 0 else "-",
            f"{v.available:.1f}",
            f"{v.pause_left_s:.1f}s" if v.pause_left_s > 0 else "",
            str(v.leases),
        )
    # Piped output (files, grep, tests) gets wide rows instead of cells wrapped at 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(table)
    console.print(
        f"mailboxes without a row: {settings.mailbox_rate_per_s:g}/s, burst {settings.mailbox_burst}, "
        f"concurrency {settings.mailbox_max_concurrency} (settings)"
    )


def register(app: typer.Typer) -> None:
    """Add ``mailpipe limits show|set|reset`` to ``app``."""
    limits_app = typer.Typer(help="The shared Graph limiter's rates, bursts and concurrency.", no_args_is_help=True)
    app.add_typer(limits_app, name="limits")

    @limits_app.command("show")
    def show_command() -> None:
        """Show every bucket: settings, tokens now, pauses and calls in flight."""
        settings = settings_or_exit()
        try:
            _print(asyncio.run(read_limits(settings)), settings)
        except StoreUnavailable as exc:
            raise fail(str(exc)) from exc

    @limits_app.command("set")
    def set_command(
        *,
        mailbox: MailboxOption = None,
        is_global: GlobalOption = False,
        rate_per_s: Annotated[float | None, typer.Option("--rate-per-s", help="Tokens per second.")] = None,
        burst: Annotated[int | None, typer.Option("--burst", help="Bucket size.")] = None,
        concurrency: Annotated[int | None, typer.Option("--concurrency", help="Calls in flight.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="End a 429 pause now.")] = False,
    ) -> None:
        """Change a bucket; running processes apply it within limiter_refresh_s."""
        key = _key(mailbox, is_global)
        problem = _check(rate_per_s, burst, concurrency, is_global)
        if problem is None and rate_per_s is None and burst is None and concurrency is None and not resume:
            problem = "nothing to change: give --rate-per-s, --burst, --concurrency or --resume"
        if problem is not None:
            raise fail(problem)
        settings = settings_or_exit()
        try:
            view = asyncio.run(
                change_limits(
                    settings,
                    key,
                    rate_per_s=rate_per_s,
                    burst=burst,
                    max_concurrency=concurrency,
                    resume=resume,
                )
            )
        except StoreUnavailable as exc:
            raise fail(str(exc)) from exc
        _print([view], settings)

    @limits_app.command("reset")
    def reset_command(mailbox: MailboxOption = None, is_global: GlobalOption = False) -> None:
        """Delete a bucket's row so the settings' defaults apply to it again."""
        key = _key(mailbox, is_global)
        settings = settings_or_exit()
        try:
            existed = asyncio.run(reset_limits(settings, key))
        except StoreUnavailable as exc:
            raise fail(str(exc)) from exc
        typer.echo(f"{key}: {'reset to the defaults' if existed else 'had no row; the defaults apply'}")
