"""PostgreSQL restarts mid-run: the workers wait and recover, the limiter never lets a call
through unlimited, and every email is sent exactly once.

Every mailpipe role runs as a real OS process (ingest + scheduler in one, two send-and-backup
workers) and reaches PostgreSQL only through a :class:`~tests.limiter.proxy.TcpProxy` the test
controls. While a backlog is being sent and the shared limiter is holding the mailboxes at their
rate, the test plays a database restart as PostgreSQL's clients see one: the proxy stops accepting
connections, every server-side connection of the test database is terminated (clients get
"terminating connection due to administrator command", 57P01), the proxy cuts whatever is still
open and refuses connections, then for the last ``STARTING_UP_S`` answers them with "the database
system is starting up" (57P03), and ``OUTAGE_S`` after it began forwards again. More emails are
published while the database is away.

The Graph emulator enforces the mailbox budget itself (a sliding one-second window and four
concurrent calls, like Outlook), so its per-mailbox figures say whether any call went through
unlimited, before, during or after the outage. The test reads the database directly, not
through the proxy, to watch progress and to check that nothing reached it during the outage.

PostgreSQL only: SQLite is an embedded file with no server to restart or connections to cut
(tests/limiter covers the limiter waiting for an unreachable SQLite file).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from pipeline.db.models import DeadLetter, IncomingEmail, SentEmail
from tests.conftest import PG_ADMIN_DSN
from tests.limiter.proxy import TcpProxy
from tests.processes import RoleProcess, worker_env
from tests.support import Publisher, pipeline_settings, sample_email

RATE = 10  # Graph calls per second allowed per mailbox
BURST = 2  # the emulator admits RATE + BURST calls in any sliding second
CONCURRENCY = 4
MAILBOXES = ("box0@contoso.example", "box1@contoso.example")
BACKLOG = 120  # published before the outage: ~3 Graph calls each (send, find in Sent Items, $value)
LATE = 10  # published while the database is away
OUTAGE_S = 5.0
STARTING_UP_S = 2.0  # the end of the outage: the server is back, recovering
#: Start the outage once this many emails have been sent: mid-run, at the limiter's pace, with
#: backups under way and most of the backlog still waiting.
OUTAGE_AFTER_SENDS = 45
#: A Graph call granted just before the outage may still reach the emulator this long after it.
IN_FLIGHT_GRACE_S = 1.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_database_restart_mid_run_loses_nothing_and_never_lifts_the_limit(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    # Given: the emulator enforcing the mailbox budget, mailpipe configured one call under it
    # (as in test_throttling: a call granted at the end of one second can arrive bunched with
    # the next second's calls), and every role reaching PostgreSQL through the proxy.
    emulator.emulator.update_config(
        {
            "mailbox_requests_per_window": RATE + BURST,
            "mailbox_window_s": 1.0,
            "mailbox_max_concurrency": CONCURRENCY,
            "throttle_retry_after_s": 1.0,
            "sent_items_delay_s": 0.1,
        }
    )
    proxy = TcpProxy(urlsplit(database_url).port or 5432)
    await proxy.start()
    parts = urlsplit(database_url)
    proxied_url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    database_name = parts.path.lstrip("/")
    settings = pipeline_settings(
        amqp_url,
        proxied_url,
        emulator,
        mailbox_rate_per_s=float(RATE),
        mailbox_burst=BURST - 1,
    )
    limits = {"mailbox_max_concurrency": CONCURRENCY, "limiter_refresh_s": 1.0}
    front = RoleProcess(
        ["ingest", "scheduler"],
        worker_env(settings) | {"scheduler_poll_interval_s": 0.2, "sweep_interval_s": 1.0},
        tmp_path / "front.log",
    )
    workers = [
        RoleProcess(["send-no-attachments", "backup"], worker_env(settings) | limits, tmp_path / f"worker{n}.log")
        for n in range(2)
    ]
    processes = [front, *workers]
    direct = create_async_engine(database_url, poolclass=NullPool)  # the test's own view, no proxy
    emails = [sample_email(n, **{"from": MAILBOXES[n % len(MAILBOXES)]}) for n in range(BACKLOG + LATE)]
    total = len(emails)
    try:
        async with _running(processes), Publisher(amqp_url) as publisher:
            await publisher.wait_for_consumer("mail.ingest")
            await publisher.wait_for_consumer("mail.send.no-attachment")
            await publisher.wait_for_consumer("mail.backup")
            started = time.monotonic()
            await publisher.publish_many(emails[:BACKLOG])

            # When: mid-run, the database "restarts"
            await _wait_for(lambda: _sends(emulator) >= OUTAGE_AFTER_SENDS, 90, "the first sends", processes)
            before = emulator.emulator.stats()
            outage_started, outage_wall = time.monotonic(), time.time()
            await proxy.refuse()
            terminated = await _terminate_backends(database_name)
            dropped = await proxy.drop()
            await asyncio.sleep(IN_FLIGHT_GRACE_S)
            statuses_at_start = await _statuses(direct)
            requests_at_start = _requests(emulator)
            await publisher.publish_many(emails[BACKLOG:])
            await asyncio.sleep(max(0.0, outage_started + OUTAGE_S - STARTING_UP_S - time.monotonic()))
            await proxy.starting_up()
            await asyncio.sleep(max(0.0, outage_started + OUTAGE_S - time.monotonic()))
            statuses_at_end = await _statuses(direct)
            requests_at_end = _requests(emulator)
            alive_after_outage = {p.log_path.name: p.alive() for p in processes}
            await proxy.resume()
            resumed, resumed_at = time.monotonic(), datetime.now(UTC)
            outage_s = resumed - outage_started
            sends_at_resume = _sends(emulator)

            # Then: Graph calls and commits start again, and everything is finished
            await _wait_for(
                lambda: _requests(emulator) > requests_at_end, 60, "a Graph call after the outage", processes
            )
            first_call_s = time.monotonic() - resumed
            await _wait_for(lambda: _sends(emulator) > sends_at_resume, 60, "a send after the outage", processes)
            first_send_s = time.monotonic() - resumed
            backed_up_at_resume = statuses_at_end.get("backed_up", 0)

            async def progressed() -> bool:
                return (await _statuses(direct)).get("backed_up", 0) > backed_up_at_resume

            await _wait_for_async(progressed, 60, "an email backed up after the outage", processes)
            first_backup_s = time.monotonic() - resumed

            async def all_backed_up() -> bool:
                return (await _statuses(direct)).get("backed_up", 0) == total

            await _wait_for_async(all_backed_up, 90, "every email backed up", processes)
            finished = time.monotonic()
            alive_at_end = {p.log_path.name: p.alive() for p in processes}
        exit_codes = {p.log_path.name: p.process.returncode if p.process else None for p in processes}
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{emulator.root_url}/_emulator/stats")).json()
        statuses = await _statuses(direct)
        async with direct.connect() as conn:
            keys = set((await conn.execute(select(IncomingEmail.correlation_key))).scalars())
            dead_letters = int(await conn.scalar(select(func.count()).select_from(DeadLetter)) or 0)
            sent_after_outage = int(
                await conn.scalar(select(func.count()).select_from(SentEmail).where(SentEmail.sent_at >= resumed_at))
                or 0
            )
    finally:
        await direct.dispose()
        await proxy.stop()

    sends = stats["sends_by_correlation"]
    before_box = {name: _per_second(box) for name, box in before["mailboxes"].items()}
    lines = [
        f"outage {outage_s:.1f} s ({STARTING_UP_S:.0f} s of it 'starting up'): {terminated} server connections "
        f"terminated, {dropped} proxied connections cut, {proxy.turned_away} turned away as 'starting up', "
        f"{proxy.accepted} proxied connections in all",
        f"before the outage: {len(before['sends_by_correlation'])} of {BACKLOG} emails sent in "
        f"{outage_started - started:.1f} s",
        f"during the outage: {requests_at_end - requests_at_start} Graph calls after the first "
        f"{IN_FLIGHT_GRACE_S:.0f} s, {LATE} emails published, "
        f"database untouched: {statuses_at_start == statuses_at_end}",
        f"after the outage: first Graph call {first_call_s:.2f} s, first send {first_send_s:.2f} s, "
        f"first backup {first_backup_s:.2f} s after it "
        f"ended; {len(sends) - sends_at_resume} sends, {sent_after_outage} sent_emails rows after it",
        f"all {total} emails backed up {finished - resumed:.1f} s after the outage, {finished - started:.1f} s in all",
    ]
    lead_in = {
        name: [before_box.get(name, {}).get(second, 0) for second in range(int(outage_wall) - 3, int(outage_wall))]
        for name in MAILBOXES
    }
    for name, box in sorted(stats["mailboxes"].items()):
        lines.append(
            f"{name}: {box['requests']} calls, {box['sends']} sends, calls in the 3 s before the outage "
            f"{lead_in[name]}, max in any 1 s {box['max_requests_in_any_1s_window']} (allowed {RATE + BURST}), "
            f"max concurrency {box['max_concurrency_seen']}, 429 rate {box['throttled_rate']}, "
            f"429 concurrency {box['throttled_concurrency']}, early calls {box['early_calls']}"
        )
    timeline = [
        sum(_per_second(box).get(second, 0) for box in stats["mailboxes"].values())
        for second in range(int(outage_wall) - 3, int(outage_wall) + int(finished - outage_started) + 2)
    ]
    lines.append(f"Graph calls per second, both mailboxes, from 3 s before the outage: {timeline}")
    report = "\n".join(lines)
    print("\n" + report)

    # No role died: each kept running through the outage and to the end.
    assert all(alive_after_outage.values()), (alive_after_outage, _tails(processes))
    assert all(alive_at_end.values()), (alive_at_end, _tails(processes))
    assert set(exit_codes.values()) == {0}, (exit_codes, _tails(processes))  # and each stopped cleanly
    # The restart was real: live connections were cut, and nothing reached the database meanwhile.
    assert terminated + dropped > 0, report
    assert statuses_at_start == statuses_at_end, (statuses_at_start, statuses_at_end)
    # It came mid-run, while the limiter was what held the mailboxes back (the backlog waiting,
    # calls at least at half the rate in the last two whole seconds: the machine kept up), and
    # sending went on afterwards.
    assert sends_at_resume < BACKLOG, report
    assert all(sum(calls[-2:]) >= RATE for calls in lead_in.values()), report
    assert len(sends) > sends_at_resume, report
    assert sent_after_outage > 0, report
    # Nothing lost, nothing doubled, nothing dead-lettered.
    assert statuses == {"backed_up": total}, statuses
    assert dead_letters == 0
    assert set(sends) == keys
    assert len(keys) == total
    assert all(count == 1 for count in sends.values()), {k: v for k, v in sends.items() if v != 1}
    # The limiter held while the database was away (no call at all) and after it came back.
    assert requests_at_end == requests_at_start, report
    assert set(stats["mailboxes"]) == set(MAILBOXES), report
    for box in stats["mailboxes"].values():
        assert box["throttled_rate"] == 0, report
        assert box["throttled_concurrency"] == 0, report
        assert box["early_calls"] == 0, report
        assert box["max_requests_in_any_1s_window"] <= RATE + BURST, report
        assert box["max_concurrency_seen"] <= CONCURRENCY, report


@asynccontextmanager
async def _running(processes: Sequence[RoleProcess]) -> AsyncIterator[None]:
    for process in processes:
        process.start()
    try:
        yield
    finally:
        # In threads: the proxy runs in this event loop, and a stopping role may still need it.
        await asyncio.gather(*(asyncio.to_thread(process.stop) for process in processes))


async def _terminate_backends(database_name: str) -> int:
    """What a restarting server does to its clients: end every session of the database."""
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database_name,
        )
    finally:
        await admin.close()
    return sum(1 for row in rows if row["ended"])


async def _statuses(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(IncomingEmail.status, func.count()).group_by(IncomingEmail.status))).all()
    return {str(status): int(n) for status, n in rows}


def _sends(emulator: Any) -> int:
    return len(emulator.emulator.stats()["sends_by_correlation"])


def _requests(emulator: Any) -> int:
    return int(emulator.emulator.stats()["totals"]["requests"])


def _per_second(box: dict[str, Any]) -> dict[int, int]:
    return {int(second): int(n) for second, n in box["calls_per_second"].items()}


async def _wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, processes: Sequence[RoleProcess]
) -> None:
    async def check() -> bool:
        return predicate()

    await _wait_for_async(check, timeout_s, what, processes)


async def _wait_for_async(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str, processes: Sequence[RoleProcess]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{_tails(processes)}")
        await asyncio.sleep(0.05)


def _tails(processes: Sequence[RoleProcess], lines: int = 20) -> str:
    return "\n".join(
        f"--- {p.log_path.name}\n" + "\n".join(line[:300] for line in p.log_path.read_text().splitlines()[-lines:])
        for p in processes
    )
