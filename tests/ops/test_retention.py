"""Retention on real databases: old backups and events go, old payloads are cleared, rows stay."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from pipeline.archive import PART_BYTES
from pipeline.db.engine import create_sessionmaker, create_statement_sessionmaker
from pipeline.db.models import EmailBackup, EmailBackupPart, EmailEvent, EmailStatus, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.messages import SendEmail
from pipeline.retention import PAYLOAD_MARKER
from pipeline.settings import Settings
from pipeline.steps.ingest import store_email
from tests.ops.cli import add_backup, invoke
from tests.support import running, sample_email, wait_until


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


def days_ago(days: float) -> datetime:
    return utcnow() - timedelta(days=days)


async def add_email(sessions: async_sessionmaker[AsyncSession], n: int, status: str, age_days: float) -> uuid.UUID:
    email_id = uuid.uuid4()
    at = days_ago(age_days)
    async with sessions.begin() as session:
        session.add(
            IncomingEmail(
                id=email_id,
                publisher_message_id=f"msg-{n}",
                idempotency_source="publisher",
                payload=SendEmail.model_validate(sample_email(n)).model_dump(
                    mode="json", by_alias=True, exclude_none=True
                ),
                status=status,
                route="no-attachment",
                mailbox="sender@contoso.example",
                correlation_key=email_id.hex,
                next_attempt_at=at,
                created_at=at,
                updated_at=at,
            )
        )
        await session.flush()  # no ORM relationship orders the inserts: the email goes first
        session.add(
            EmailEvent(incoming_email_id=email_id, publisher_message_id=f"msg-{n}", event="received", created_at=at)
        )
        session.add(
            EmailBackup(
                incoming_email_id=email_id,
                graph_message_id=f"g-{n}",
                compressed_blob=b"x",
                size=1,
                checksum="0" * 64,
                created_at=at,
            )
        )
    return email_id


async def snapshot(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    async with sessions() as session:
        emails = {e.publisher_message_id: e for e in (await session.execute(select(IncomingEmail))).scalars()}
        backups = set((await session.execute(select(EmailBackup.graph_message_id))).scalars())
        events = await session.scalar(select(func.count()).select_from(EmailEvent))
    return {"emails": emails, "backups": backups, "events": events}


async def test_retention_clears_and_deletes_what_is_old_in_batches(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    # (n, status, age in days)
    rows = [
        (1, EmailStatus.BACKED_UP, 400),  # everything old: backup, event and payload go
        (2, EmailStatus.FAILED, 40),  # payload old; backup and event kept
        (3, EmailStatus.CANCELLED, 100),  # payload and event old
        (4, EmailStatus.BACKED_UP, 5),  # recent: untouched
        (5, EmailStatus.RETRY_WAIT, 400),  # not finished: the payload is still needed to send it
        (6, EmailStatus.SENT, 400),  # not finished either (backup pending)
    ]
    for n, status, age in rows:
        await add_email(sessions, n, status, age)
    env = {"MAILPIPE_DATABASE_URL": database_url}

    dry = await invoke(["retention", "run", "--dry-run"], env)
    assert dry.exit_code == 0, dry.output
    assert "3 backup(s) would be deleted" in dry.output
    assert "3 payload(s) would be cleared" in dry.output
    assert "4 event(s) would be deleted" in dry.output
    assert len((await snapshot(sessions))["backups"]) == 6, "a dry run changes nothing"

    done = await invoke(["retention", "run", "--batch-size", "2"], env)
    assert done.exit_code == 0, done.output
    assert "3 backup(s) were deleted" in done.output
    assert "3 payload(s) were cleared" in done.output
    assert "4 event(s) were deleted" in done.output

    after = await snapshot(sessions)
    assert after["backups"] == {"g-2", "g-3", "g-4"}
    assert after["events"] == 2
    emails = after["emails"]
    assert set(emails) == {f"msg-{n}" for n, _, _ in rows}, "rows are kept for idempotency"
    for key in ("msg-1", "msg-2", "msg-3"):
        assert set(emails[key].payload) == {PAYLOAD_MARKER}
        assert emails[key].updated_at < days_ago(30), "clearing keeps the time the email finished"
    for key in ("msg-4", "msg-5", "msg-6"):
        assert emails[key].payload["subject"].startswith("Invoice")

    again = await invoke(["retention", "run"], env)
    assert again.output.startswith("0 backup(s) were deleted")
    assert "0 payload(s) were cleared" in again.output
    assert "0 event(s) were deleted" in again.output

    # A re-published SendEmail whose payload was cleared is still recognised as a duplicate.
    ctx = SimpleNamespace(sessions=sessions, statement_sessions=create_statement_sessionmaker(sessions.kw["bind"]))
    stored = await store_email(ctx, SendEmail.model_validate(sample_email(1)), sample_email(1))  # type: ignore[arg-type]
    assert stored.created is False
    assert stored.id == emails["msg-1"].id


async def test_an_old_backup_stored_in_parts_goes_with_its_parts(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    old = await add_backup(sessions, 1, None, padding=2 * PART_BYTES)
    recent = await add_backup(sessions, 2, None, padding=2 * PART_BYTES)
    async with sessions.begin() as session:
        await session.execute(update(EmailBackup).where(EmailBackup.id == old).values(created_at=days_ago(400)))
    done = await invoke(["retention", "run"], {"MAILPIPE_DATABASE_URL": database_url})
    assert done.output.startswith("1 backup(s) were deleted"), done.output
    async with sessions() as session:
        owners = set((await session.execute(select(EmailBackupPart.backup_id))).scalars())
        kept = await session.scalar(select(EmailBackup.parts).where(EmailBackup.id == recent))
        count = await session.scalar(select(func.count()).select_from(EmailBackupPart))
    assert owners == {recent}
    assert count == kept


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_scheduler_role_runs_retention_on_its_own(
    amqp_url: str, database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await add_email(sessions, 1, EmailStatus.BACKED_UP, 400)
    settings = Settings(amqp_url=amqp_url, database_url=database_url, retention_interval_s=0.3)
    async with running(settings, ["scheduler"]):

        async def applied() -> bool:
            now = await snapshot(sessions)
            return not now["backups"] and now["events"] == 0

        await wait_until(applied, timeout_s=20, what="retention to run in the scheduler role")
    emails = (await snapshot(sessions))["emails"]
    assert set(emails["msg-1"].payload) == {PAYLOAD_MARKER}
