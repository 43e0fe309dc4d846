"""Run-time changes, the database going away, the CLI, and the switch that turns the limiter off."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import limits
from pipeline.cli.limits import change_limits, read_limits
from pipeline.limiter import BACKOFF_MAX_S, DisabledLimiter, SharedLimiter, build_limiter
from tests.limiter.conftest import LIMITS, MakeLimiter, limiter_settings
from tests.limiter.measure import max_overlap, run_calls
from tests.limiter.proxy import TcpProxy

REFRESH = LIMITS["limiter_refresh_s"]
SLOW = "slow@contoso.example"
WIDE = "wide@contoso.example"


async def test_limits_changed_at_run_time_apply_within_the_refresh_interval(
    make_limiter: MakeLimiter, database_url: str
) -> None:
    # Given a running limiter: SLOW at 2 calls/s (burst 1), WIDE with 3 calls in flight at most
    settings = limiter_settings(database_url)
    await change_limits(settings, SLOW, rate_per_s=2.0, burst=1)
    await change_limits(settings, WIDE, rate_per_s=1000.0, burst=100, max_concurrency=3)
    limiter = await make_limiter()
    started = time.time()
    until = started + 1.2 + REFRESH + 1.0
    slow = asyncio.create_task(run_calls(limiter, SLOW, workers=4, until=until, call_s=0.005))
    wide = asyncio.create_task(run_calls(limiter, WIDE, workers=4, until=until, call_s=0.1))
    await asyncio.sleep(1.2)
    # When an operator raises SLOW to 40/s (burst 10) and lowers WIDE to 1 call at a time
    changed = time.time()
    await change_limits(settings, SLOW, rate_per_s=40.0, burst=10)
    await change_limits(settings, WIDE, max_concurrency=1)
    slow_calls, wide_calls = await slow, await wide
    # Then before the change SLOW ran at 2/s, and one refresh later at the new rate
    before = [e for e, _ in slow_calls if e < changed]
    after = [e for e, _ in slow_calls if changed + REFRESH <= e < changed + REFRESH + 1.0]
    wide_before = max_overlap([i for i in wide_calls if i[0] < changed])
    wide_after = max_overlap([i for i in wide_calls if i[0] >= changed + REFRESH])
    print(
        f"\nrun-time change: {SLOW} {len(before)} calls in {changed - started:.2f}s at 2/s, then "
        f"{len(after)} calls in 1 s at 40/s; {WIDE} max concurrent {wide_before} -> {wide_after}"
    )
    assert len(before) <= 1 + 2.0 * (changed - started)
    # The old limits allow at most 2/s + burst 1 = 3 calls in any second; 10 proves the change.
    assert len(after) >= 10, "the new rate was not applied within the refresh interval"
    assert len(after) <= 40 + 10
    assert wide_before == 3
    assert wide_after == 1


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    # Requested before make_limiter so it stops only after the limiter's engine is disposed.
    forwarder = TcpProxy(5432)
    yield forwarder
    await forwarder.stop()


async def test_calls_wait_while_the_database_is_away_and_go_on_when_it_is_back(
    proxy: TcpProxy, make_limiter: MakeLimiter, database_url: str, tmp_path: Path
) -> None:
    # Given a limiter whose database is unreachable (PostgreSQL: nothing on the port yet;
    # SQLite: the file's directory does not exist yet)
    if database_url.startswith("sqlite"):
        migrated = Path(urlsplit(database_url).path)
        later = tmp_path / "later" / "mailpipe.db"
        url = f"sqlite+aiosqlite:///{later}"

        async def come_back() -> None:
            later.parent.mkdir()
            shutil.copy(migrated, later)

    else:
        parts = urlsplit(database_url)
        url = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
        come_back = proxy.start
    limiter = await make_limiter(url=url)
    # When a call asks for a slot
    waiting = asyncio.create_task(_enter(limiter))
    done, _ = await asyncio.wait({waiting}, timeout=1.0)
    # Then it neither fails nor gets through while the database is away
    assert not done
    back = time.time()
    await come_back()
    # And it gets its slot soon after the database is back
    entered = await asyncio.wait_for(waiting, timeout=BACKOFF_MAX_S + 2.0)
    print(f"\ndatabase back: slot granted {entered - back:.2f}s later")


async def _enter(limiter: SharedLimiter) -> float:
    async with limiter.slot(SLOW):
        return time.time()


async def test_build_limiter_honours_the_switch(database_url: str) -> None:
    # Given the setting off, the limiter never waits, even after a 429
    off = await build_limiter(_ctx(limiter_settings(database_url, limiter_enabled=False)))
    assert isinstance(off, DisabledLimiter)
    await off.report_throttled(SLOW, 60.0)
    started = time.perf_counter()
    for _ in range(100):
        async with off.slot(SLOW):
            pass
    assert time.perf_counter() - started < 0.5
    await off.aclose()
    # And with it on (the default) the limiter is the shared one
    on_settings = limiter_settings(database_url)
    assert on_settings.limiter_enabled
    on = await build_limiter(_ctx(on_settings))
    assert isinstance(on, SharedLimiter)
    await on.aclose()


def _ctx(settings: Any) -> Any:
    return SimpleNamespace(settings=settings, engine=None, worker_name="test:1")


def _cli() -> typer.Typer:
    app = typer.Typer()
    limits.register(app)
    return app


async def test_limits_cli_sets_shows_and_resets(database_url: str) -> None:
    runner, app, env = CliRunner(), _cli(), {"MAILPIPE_DATABASE_URL": database_url}

    def invoke(*args: str) -> Any:
        return runner.invoke(app, ["limits", *args], env=env)

    # When an operator sets a mailbox's limits and the global rate
    result = await asyncio.to_thread(
        invoke,
        "set",
        "--mailbox",
        "Ops@Contoso.example",
        "--rate-per-s",
        "3",
        "--burst",
        "2",
        "--concurrency",
        "1",
    )
    assert result.exit_code == 0, result.output
    result = await asyncio.to_thread(invoke, "set", "--global", "--rate-per-s", "500")
    assert result.exit_code == 0, result.output
    # Then the rows hold them, and show lists both
    views = {v.key: v for v in await read_limits(limiter_settings(database_url))}
    assert (views["ops@contoso.example"].rate_per_s, views["ops@contoso.example"].burst) == (3.0, 2)
    assert views["ops@contoso.example"].max_concurrency == 1
    assert views["*"].rate_per_s == 500.0
    shown = await asyncio.to_thread(invoke, "show")
    assert shown.exit_code == 0
    assert "ops@contoso.example" in shown.output
    assert "* (global)" in shown.output
    # And reset removes the mailbox's row so the defaults apply again
    result = await asyncio.to_thread(invoke, "reset", "--mailbox", "ops@contoso.example")
    assert result.exit_code == 0
    assert "ops@contoso.example" not in {v.key for v in await read_limits(limiter_settings(database_url))}


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["set", "--rate-per-s", "3"], "exactly one of --mailbox"),
        (["set", "--mailbox", "a@b.example", "--global", "--burst", "2"], "exactly one of --mailbox"),
        (["set", "--mailbox", "nobody", "--burst", "2"], "is not a mailbox address"),
        (["set", "--mailbox", "a@b.example", "--rate-per-s", "0"], "--rate-per-s must be greater than 0"),
        (["set", "--mailbox", "a@b.example", "--burst", "0"], "--burst must be at least 1"),
        (["set", "--global", "--concurrency", "2"], "--concurrency applies to mailboxes only"),
        (["set", "--mailbox", "a@b.example"], "nothing to change"),
    ],
)
def test_limits_cli_bad_arguments_exit_2_with_one_line(args: list[str], problem: str) -> None:
    result = CliRunner().invoke(_cli(), ["limits", *args])
    assert result.exit_code == 2
    assert problem in result.output
    assert len(result.output.strip().splitlines()) == 1
