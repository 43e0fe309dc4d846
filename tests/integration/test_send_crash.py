"""SIGKILL a send worker mid-upload and mid-send: each email still leaves exactly once, whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from pipeline.db.buckets import mailbox_key
from pipeline.db.models import EmailEvent, FileUpload, IncomingEmail
from pipeline.emulator import expected_file_sha256
from pipeline.limiter_store import LimiterStore
from tests.processes import RoleProcess, worker_env
from tests.support import Publisher, engine_for, pipeline_settings, running, sample_email, wait_until

BIG = 60 * 1024 * 1024 + 123


async def _email(ctx: Any, key: str) -> IncomingEmail | None:
    async with ctx.sessions() as session:
        return (
            await session.execute(select(IncomingEmail).where(IncomingEmail.publisher_message_id == key))
        ).scalar_one_or_none()


async def _backed_up(ctx: Any, key: str, *, timeout_s: float) -> None:
    async def done() -> bool:
        row = await _email(ctx, key)
        return row is not None and row.status == "backed_up"

    await wait_until(done, timeout_s=timeout_s, what=f"{key} backed up after the restart")


async def test_worker_killed_mid_upload_resumes_and_sends_once_with_the_file_intact(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    emulator.emulator.update_config({"keep_attachment_bytes": False})
    settings = pipeline_settings(amqp_url, database_url, emulator)
    worker = RoleProcess(["send-attachments"], worker_env(settings), tmp_path / "worker.log")
    email = sample_email(
        1, attachments=[{"name": "scan.bin", "size": BIG, "urlOrId": f"{emulator.root_url}/_emulator/files/{BIG}/42"}]
    )
    async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
        worker.start()
        try:
            await publisher.publish(email)

            async def mid_upload() -> bool:
                async with ctx.sessions() as session:
                    row = (await session.execute(select(FileUpload))).scalar_one_or_none()
                return row is not None and 0 < row.bytes_confirmed < BIG // 2

            await wait_until(mid_upload, timeout_s=120, interval_s=0.05, what="an upload in progress")
            worker.kill()
            async with ctx.sessions() as session:
                confirmed_at_kill = (await session.execute(select(FileUpload))).scalar_one().bytes_confirmed
            worker.start()

            await _backed_up(ctx, "msg-1", timeout_s=180)
        finally:
            worker.stop()
    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    (sent,) = stats["sent"]
    assert stats["sends_by_correlation"] == {sent["correlation"]: 1}
    (attachment,) = sent["attachments"]
    assert attachment["size"] == BIG
    assert attachment["sha256"] == expected_file_sha256(BIG, 42)
    uploaded = sum(box["uploaded_bytes"] for box in stats["mailboxes"].values())
    print(f"\nkilled at {confirmed_at_kill} of {BIG} bytes; uploaded {uploaded} bytes in total")
    assert uploaded < 2 * BIG, "the upload resumed instead of starting over"


async def test_worker_killed_mid_send_is_not_sent_twice(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    # Every Graph call takes 2 s, so the kill lands after the send was committed as started
    # and while Graph is still working on it; the emulator completes the send anyway.
    emulator.emulator.update_config({"latency_s": 2.0})
    settings = pipeline_settings(amqp_url, database_url, emulator, graph_sent_lookup_deadline_s=8.0)
    worker = RoleProcess(["send-no-attachments"], worker_env(settings), tmp_path / "worker.log")
    async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
        worker.start()
        try:
            await publisher.publish(sample_email(2))

            async def send_call_in_flight() -> bool:
                # The take records the start before the call, so also wait for Graph to have it:
                # the only Graph call before the backup's is the sendMail.
                row = await _email(ctx, "msg-2")
                if row is None or row.send_started_at is None:
                    return False
                stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
                return int(stats["totals"]["requests"]) >= 1

            await wait_until(send_call_in_flight, timeout_s=60, interval_s=0.02, what="the send call to start")
            worker.kill()
            worker.start()

            await _backed_up(ctx, "msg-2", timeout_s=120)
        finally:
            worker.stop()
        row = await _email(ctx, "msg-2")
    assert row is not None
    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    assert stats["sends_by_correlation"] == {row.correlation_key: 1}


async def test_worker_killed_after_its_take_and_before_the_send_call_sends_once_after_a_look_up(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    # The take records the send start on this route (pipeline.db.take); a paused mailbox holds
    # the send call in the limiter, so the kill lands between that commit and any Graph call.
    settings = pipeline_settings(amqp_url, database_url, emulator)
    worker = RoleProcess(["send-no-attachments"], worker_env(settings), tmp_path / "worker.log")
    engine = engine_for(settings)
    store = LimiterStore(engine, settings)
    mailbox = mailbox_key(sample_email(3)["from"])
    await store.ensure(mailbox)
    await store.pause(mailbox, 8.0)
    async with running(settings, ["ingest", "scheduler", "backup"]) as ctx, Publisher(amqp_url) as publisher:
        worker.start()
        try:
            await publisher.publish(sample_email(3))

            async def taken_and_waiting() -> bool:
                row = await _email(ctx, "msg-3")
                return row is not None and row.status == "sending" and row.send_started_at is not None

            await wait_until(taken_and_waiting, timeout_s=60, interval_s=0.02, what="the take to commit")
            assert httpx.get(f"{emulator.root_url}/_emulator/stats").json()["totals"]["requests"] == 0
            worker.kill()
            worker.start()

            await _backed_up(ctx, "msg-3", timeout_s=120)
        finally:
            worker.stop()
        row = await _email(ctx, "msg-3")
        async with ctx.sessions() as session:
            events = list(
                (
                    await session.execute(
                        select(EmailEvent.event).where(EmailEvent.incoming_email_id == row.id).order_by(EmailEvent.id)
                    )
                ).scalars()
            )
    await engine.dispose()
    assert row is not None
    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    assert stats["sends_by_correlation"] == {row.correlation_key: 1}
    assert "resumed" in events
    # An email sent straight away costs three calls (the send, the backup's look-up and MIME).
    # At least one more is the Sent Items look-up before the resend; while the pause outlasts
    # the 3 s deadline, the look-up's first clean answer decides, so there may be just one.
    assert stats["totals"]["requests"] >= 4
