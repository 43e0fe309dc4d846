"""Four worker processes against a Graph that throttles like Outlook: at the limit, never past it.

Issue numbers: 20 requests/s allowed per mailbox, 3 mailboxes, 4 worker processes, a backlog
of 3,000 emails. Every role is its own OS process (ingest + scheduler in one, four
send-and-backup workers) so they spread over the cores; the Graph emulator runs in the test
process and enforces Outlook's rules itself: a sliding one-second window of ``RATE +
GRAPH_BURST`` calls and 4 concurrent calls per mailbox, with ``Retry-After`` pauses it polices
("early" calls).

mailpipe is told the same rate but a burst of 2 (``MAILPIPE_BURST``): the shared limiter grants
at most ``RATE + 2`` calls in any second, and the rest of Graph's burst is headroom for the time
between a grant and the request reaching Graph (a starved process sends granted calls late, and
late calls bunch). A burst of 1 would lose rate instead: a bucket that holds one token cannot
make up for a grant that came late, so every scheduling delay is rate lost (93-97% measured).
README "Graph limits, retries and dead letters" explains the same setting for production.

Marked ``soak``: at 60 calls/s (20 emails/s through send and backup) the workers, the broker,
PostgreSQL and the emulator use most of a 2-core machine. Quiet, it measured 95.0 %, 97 % and
98 % of the rate (2026-11-22) and 99.5-100 % with at most 23 calls in any second (2026-12-05);
with other work on the machine the CPU, not the limiter, sets the pace.
``test_the_limiter_holds_the_rate_when_it_binds`` runs the same checks at 5 calls/s, in CI.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.db.engine import create_engine
from pipeline.db.models import IncomingEmail
from pipeline.settings import load_settings
from tests.processes import RoleProcess, worker_env
from tests.support import Publisher, pipeline_settings, sample_email

GRAPH_BURST = 5
MAILPIPE_BURST = 2
MAILBOXES = 3
WORKERS = 4


async def _run_backlog(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path, *, rate: int, backlog: int
) -> tuple[dict[str, Any], float, float, int]:
    """Drain ``backlog`` emails over ``MAILBOXES`` mailboxes; return emulator stats, start, end, done."""
    emulator.emulator.update_config(
        {
            "mailbox_requests_per_window": rate + GRAPH_BURST,
            "mailbox_window_s": 1.0,
            "mailbox_max_concurrency": 4,
            "throttle_retry_after_s": 1.0,
            "sent_items_delay_s": 0.1,
        }
    )
    settings = pipeline_settings(
        amqp_url,
        database_url,
        emulator,
        mailbox_rate_per_s=float(rate),
        mailbox_burst=MAILPIPE_BURST,
        mailbox_max_concurrency=4,
    )
    env = worker_env(settings) | {
        "mailbox_max_concurrency": 4,
        "limiter_refresh_s": 1.0,
        "max_in_flight_no_attachments": 120,
        "backup_delay_s": 0.2,
        "scheduler_poll_interval_s": 0.2,
    }
    front = RoleProcess(["ingest", "scheduler"], env, tmp_path / "front.log")
    workers = [RoleProcess(["send-no-attachments", "backup"], env, tmp_path / f"worker{n}.log") for n in range(WORKERS)]
    emails = [sample_email(n, **{"from": f"box{n % MAILBOXES}@contoso.example"}) for n in range(backlog)]
    engine = create_engine(load_settings(database_url=database_url))
    done = 0
    try:
        front.start()
        async with Publisher(amqp_url) as publisher:
            await publisher.wait_for_consumer("mail.ingest", timeout_s=60)
            # The backlog: every email accepted and stored before a worker runs, so the measured
            # span is the workers draining it, not the ingest burst competing for the CPU.
            await publisher.publish_many(emails)
            await _wait_stored(engine, backlog)
            for worker in workers:
                worker.start()
            await publisher.wait_for_consumer("mail.send.no-attachment", timeout_s=60)
            await publisher.wait_for_consumer("mail.backup", timeout_s=60)
            started = time.time()
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and done < backlog:
            await asyncio.sleep(2.0)
            async with engine.connect() as connection:
                done = int(
                    await connection.scalar(
                        select(func.count()).where(IncomingEmail.status.in_(("backed_up", "failed")))
                    )
                    or 0
                )
        finished = time.time()
        assert all(p.alive() for p in (front, *workers)), "a mailpipe process died"
    finally:
        for process in (front, *workers):
            process.stop()
        await engine.dispose()
    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    return stats, started, finished, done


async def _wait_stored(engine: AsyncEngine, count: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            if int(await connection.scalar(select(func.count()).select_from(IncomingEmail)) or 0) >= count:
                return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the backlog of {count} was not stored within {timeout_s:.0f} s")


def _check(stats: dict[str, Any], started: float, finished: float, *, rate: int, backlog: int) -> list[str]:
    """Assert the issue's guarantees per mailbox; return the figures for the report."""
    assert len(stats["sends_by_correlation"]) == backlog
    assert all(count == 1 for count in stats["sends_by_correlation"].values())
    report = []
    for name, box in sorted(stats["mailboxes"].items()):
        per_second = {int(k): v for k, v in box["calls_per_second"].items()}
        # Steady state: whole seconds while the backlog lasted, minus the ramp at each end.
        steady = [per_second.get(s, 0) for s in range(int(started) + 5, int(finished) - 5)]
        mean = statistics.fmean(steady) if steady else 0.0
        line = (
            f"{name}: mean {mean:.1f}/s of {rate} over {len(steady)} s ({100 * mean / rate:.0f}%), "
            f"max in any 1 s {box['max_requests_in_any_1s_window']} (Graph allows {rate + GRAPH_BURST}), "
            f"max concurrency {box['max_concurrency_seen']}, 429 rate {box['throttled_rate']}, "
            f"429 concurrency {box['throttled_concurrency']}, early calls {box['early_calls']}"
        )
        report.append(line)
        assert box["throttled_rate"] == 0, line
        assert box["throttled_concurrency"] == 0, line
        assert box["early_calls"] == 0, line
        assert box["max_requests_in_any_1s_window"] <= rate + GRAPH_BURST, line
        assert box["max_concurrency_seen"] <= 4, line
        assert mean >= 0.95 * rate, line
    return report


async def _drain_and_check(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path, *, rate: int, backlog: int
) -> None:
    stats, started, finished, done = await _run_backlog(
        amqp_url, database_url, emulator, tmp_path, rate=rate, backlog=backlog
    )
    assert done == backlog
    report = _check(stats, started, finished, rate=rate, backlog=backlog)
    print("\n" + "\n".join(report) + f"\nbacklog of {backlog} drained in {finished - started:.0f} s")


@pytest.mark.soak
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_four_workers_run_at_the_mailbox_rate_without_going_over_it(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    await _drain_and_check(amqp_url, database_url, emulator, tmp_path, rate=20, backlog=3000)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_limiter_holds_the_rate_when_it_binds(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    # 3 mailboxes x 5 calls/s = 15 calls/s, 5 emails/s: a fraction of what this machine sustains,
    # so the limiter, not the CPU, sets the pace and the 95% floor is a test of the limiter.
    await _drain_and_check(amqp_url, database_url, emulator, tmp_path, rate=5, backlog=360)
