"""SIGTERM a send worker mid-work: it drains within its grace period and nothing is lost or doubled.

Two cases on one pipeline: handlers that finish within ``graceful_timeout_s`` are drained and
acked; a handler still waiting on Graph when the grace period ends is abandoned unacked,
RabbitMQ redelivers it, and the next worker resumes from the database (looking in Sent Items
before sending again).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from pipeline.db.models import IncomingEmail
from tests.processes import RoleProcess, worker_env
from tests.support import Publisher, pipeline_settings, running, sample_email, wait_until

FIRST, SECOND = 24, 4


def worker_settings(settings: Any, graceful_timeout_s: float) -> dict[str, object]:
    return worker_env(settings) | {
        "graceful_timeout_s": graceful_timeout_s,
        "send_no_attachments_prefetch": 8,
        "log_level": "DEBUG",
    }


def sigterm_and_time(worker: RoleProcess, limit_s: float) -> float:
    assert worker.process is not None
    started = time.monotonic()
    worker.process.terminate()
    worker.process.wait(timeout=limit_s + 30)
    took = time.monotonic() - started
    assert worker.process.returncode == 0, worker.log_path.read_text()[-3000:]
    return took


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_sigterm_drains_in_flight_sends_and_loses_nothing(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    emulator.emulator.update_config({"latency_s": 0.4})
    settings = pipeline_settings(amqp_url, database_url, emulator)

    async def statuses() -> dict[str, int]:
        async with ctx.sessions() as session:
            rows = (
                await session.execute(select(IncomingEmail.status, func.count()).group_by(IncomingEmail.status))
            ).all()
        return {str(status): int(n) for status, n in rows}

    workers = [
        RoleProcess(["send-no-attachments"], worker_settings(settings, grace), tmp_path / f"{name}.log")
        for name, grace in (("first", 15.0), ("second", 1.0), ("third", 15.0))
    ]
    first, second, third = workers
    try:
        async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
            # 1. Drained: every handler in flight at SIGTERM finishes within the grace period.
            first.start()
            await publisher.publish_many([sample_email(n) for n in range(FIRST)])

            async def mid_work() -> bool:
                # Some sends finished (whatever their backup has reached since) and some in flight.
                # Not "sent": that status comes with the backup's dispatch, backup_delay_s later,
                # by when a fast worker may have finished all of FIRST.
                now = await statuses()
                done = sum(now.get(status, 0) for status in ("backup_wait", "sent", "backed_up"))
                return now.get("sending", 0) > 0 and done > 0

            await wait_until(mid_work, timeout_s=60, interval_s=0.05, what="sends in progress")
            took = sigterm_and_time(first, 15.0)
            assert took < 15.0
            after = await statuses()
            assert after.get("sending", 0) == 0, f"a send was left half-done after a graceful stop: {after}"
            log = (tmp_path / "first.log").read_text()
            assert "shut down gracefully" in log
            assert '"outcome": "interrupted"' not in log

            # 2. Abandoned: a send slower than the grace period is left unacked and resumed later.
            emulator.emulator.update_config({"latency_s": 4.0})
            second.start()
            await publisher.publish_many([sample_email(n) for n in range(FIRST, FIRST + SECOND)])

            async def sending() -> bool:
                return (await statuses()).get("sending", 0) > 0

            await wait_until(sending, timeout_s=60, interval_s=0.05, what="a slow send in progress")
            took = sigterm_and_time(second, 1.0)
            assert took < 1.0 + 8.0, f"stopping took {took:.1f}s with a 1s grace period"
            assert (await statuses()).get("sending", 0) > 0, "the abandoned send stays in the database as sending"

            # 3. A new worker finishes everything, each email sent exactly once.
            emulator.emulator.update_config({"latency_s": 0.0})
            third.start()

            async def all_backed_up() -> bool:
                return (await statuses()).get("backed_up", 0) == FIRST + SECOND

            await wait_until(all_backed_up, timeout_s=120, interval_s=0.5, what="every email backed up")
            async with ctx.sessions() as session:
                keys = set((await session.execute(select(IncomingEmail.correlation_key))).scalars())
    finally:
        for worker in workers:  # whatever failed above, no worker process outlives the test
            worker.stop()

    sends = httpx.get(f"{emulator.root_url}/_emulator/stats").json()["sends_by_correlation"]
    assert set(sends) == keys
    assert all(count == 1 for count in sends.values()), {k: v for k, v in sends.items() if v != 1}
