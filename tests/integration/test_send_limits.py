"""Pool limits that must hold across processes, and memory that must not grow with file size."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import func, select

from pipeline.db.models import IncomingEmail, WorkerReceipt
from tests.processes import RoleProcess, worker_env
from tests.support import Publisher, pipeline_settings, running, sample_email, wait_until

CAP = 5


async def test_in_flight_cap_holds_with_three_worker_processes(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    # Each Graph call takes 0.3 s, and the three workers could take 3 x 16 dispatches at once:
    # only the scheduler's cap keeps them at 5.
    emulator.emulator.update_config({"latency_s": 0.3, "mailbox_max_concurrency": None})
    settings = pipeline_settings(amqp_url, database_url, emulator, max_in_flight_no_attachments=CAP)
    workers = [
        RoleProcess(["send-no-attachments"], worker_env(settings), tmp_path / f"worker{n}.log") for n in range(3)
    ]
    emails = [sample_email(n, **{"from": f"sender{n % 10}@contoso.example"}) for n in range(60)]
    peak = 0
    async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
        for worker in workers:
            worker.start()
        try:
            await publisher.wait_for_consumer("mail.send.no-attachment")
            await publisher.publish_many(emails)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                async with ctx.sessions() as session:
                    in_flight = await session.scalar(
                        select(func.count()).where(
                            IncomingEmail.route == "no-attachment",
                            IncomingEmail.status.in_(("dispatched", "sending")),
                        )
                    )
                    finished = await session.scalar(
                        select(func.count()).where(IncomingEmail.status.in_(("sent", "backed_up")))
                    )
                peak = max(peak, int(in_flight or 0))
                if finished == len(emails):
                    break
                await asyncio.sleep(0.02)
            async with ctx.sessions() as session:
                workers_used = await session.scalar(select(func.count(func.distinct(WorkerReceipt.worker))))
        finally:
            for worker in workers:
                worker.stop()
    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    print(f"\npeak in flight {peak} (cap {CAP}); workers used {workers_used}")
    assert finished == len(emails)
    assert peak <= CAP
    assert peak == CAP, "the test should have pushed the pool to its cap"
    assert workers_used == 3
    assert len(stats["sends_by_correlation"]) == len(emails)


def _rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def test_a_100_mb_attachment_is_streamed_not_held_in_memory(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    emulator.emulator.update_config({"keep_attachment_bytes": False})
    settings = pipeline_settings(amqp_url, database_url, emulator)
    worker = RoleProcess(["send-attachments"], worker_env(settings), tmp_path / "worker.log")
    files = f"{emulator.root_url}/_emulator/files"
    size = 100 * 1024 * 1024
    async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
        worker.start()
        try:
            # Warm up: load every module the attachment path uses, with a 4 MB file.
            await publisher.publish(
                sample_email(1, attachments=[{"name": "warm.bin", "size": 4_000_000, "urlOrId": f"{files}/4000000/1"}])
            )
            await wait_until(lambda: _status(ctx, "msg-1", "backed_up"), timeout_s=120, what="warm-up email")
            await asyncio.sleep(1.0)
            idle = _rss_bytes(worker.pid)
            await publisher.publish(
                sample_email(2, attachments=[{"name": "big.bin", "size": size, "urlOrId": f"{files}/{size}/2"}])
            )
            peak = idle
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not await _status(ctx, "msg-2", "backed_up"):
                peak = max(peak, _rss_bytes(worker.pid))
                await asyncio.sleep(0.02)
            done = await _status(ctx, "msg-2", "backed_up")
        finally:
            worker.stop()
    growth_mb = (peak - idle) / 2**20
    print(
        f"\nattachment worker RSS: idle {idle / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
        f"growth {growth_mb:.1f} MiB for a {size // 2**20} MiB file"
    )
    assert done
    # A few 3.2 MB chunks at once (the download buffer, the chunk being sent, the socket's
    # buffer) and the allocator's slack: 12-18 MiB measured. Requests that kept their chunk
    # until the cyclic garbage collector ran held about 17 chunks: 57-68 MiB.
    assert growth_mb < 32


async def _status(ctx: Any, key: str, status: str) -> bool:
    async with ctx.sessions() as session:
        value = await session.scalar(select(IncomingEmail.status).where(IncomingEmail.publisher_message_id == key))
    return value == status
