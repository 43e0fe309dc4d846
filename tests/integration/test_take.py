"""Taking a dispatch on a real database: receipt, status, send start and event commit together."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pipeline.db.engine import create_sessionmaker
from pipeline.db.models import EmailEvent, EmailStatus, IncomingEmail, Route, WorkerReceipt
from pipeline.db.take import Taken, take
from pipeline.db.types import utcnow


async def _add_email(engine: AsyncEngine, *, route: str = Route.NO_ATTACHMENT, attempt: int = 1) -> uuid.UUID:
    email_id = uuid.uuid4()
    async with create_sessionmaker(engine).begin() as session:
        session.add(
            IncomingEmail(
                id=email_id,
                publisher_message_id=f"pm-{email_id.hex[:8]}",
                idempotency_source="publisher",
                payload={"subject": "hello"},
                status=EmailStatus.DISPATCHED,
                route=route,
                mailbox="a@x.example",
                priority=5,
                next_attempt_at=utcnow(),
                attempt_count=attempt,
                backup_attempt_count=0,
                correlation_key=email_id.hex,
                created_at=utcnow() - timedelta(seconds=5),
                updated_at=utcnow() - timedelta(seconds=5),
            )
        )
    return email_id


async def _take(
    statement_sessions: async_sessionmaker[AsyncSession], email_id: uuid.UUID, attempt: int = 1
) -> Taken | None:
    async with statement_sessions.begin() as session:
        return await take(session, email_id, attempt, pool="no-attachment", worker="w1", now=utcnow())


async def _state(engine: AsyncEngine, email_id: uuid.UUID) -> tuple[IncomingEmail, list[str], int]:
    async with create_sessionmaker(engine)() as session:
        email = (await session.execute(select(IncomingEmail).where(IncomingEmail.id == email_id))).scalar_one()
        events = (
            await session.execute(
                select(EmailEvent.event).where(EmailEvent.incoming_email_id == email_id).order_by(EmailEvent.id)
            )
        ).scalars()
        receipts = (
            await session.execute(select(WorkerReceipt).where(WorkerReceipt.incoming_email_id == email_id))
        ).all()
        return email, list(events), len(receipts)


async def test_a_take_commits_receipt_sending_send_start_and_event_together(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    email_id = await _add_email(engine)

    taken = await _take(statement_sessions, email_id)

    assert taken is not None
    assert (taken.resumed, taken.started_before, taken.start_recorded) == (False, False, True)
    assert taken.email.id == email_id
    assert taken.email.status == EmailStatus.SENDING
    assert taken.email.payload == {"subject": "hello"}
    email, events, receipts = await _state(engine, email_id)
    assert email.status == EmailStatus.SENDING
    assert email.send_started_at is not None
    assert email.send_started_at == taken.email.send_started_at
    assert events == ["taken"]
    assert receipts == 1


async def test_taking_the_same_attempt_again_is_a_resume_that_keeps_the_first_send_start(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    email_id = await _add_email(engine)
    await _take(statement_sessions, email_id)
    first_start = (await _state(engine, email_id))[0].send_started_at

    again = await _take(statement_sessions, email_id)  # the worker died after its take; the dispatch came back

    assert again is not None
    assert (again.resumed, again.started_before) == (True, True)
    email, events, receipts = await _state(engine, email_id)
    assert email.send_started_at == first_start
    assert events == ["taken", "resumed"]
    assert receipts == 1


async def test_a_stale_dispatch_takes_nothing_and_writes_nothing(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    email_id = await _add_email(engine, attempt=2)

    assert await _take(statement_sessions, email_id, attempt=1) is None
    assert await _take(statement_sessions, uuid.uuid4()) is None

    email, events, receipts = await _state(engine, email_id)
    assert (email.status, email.send_started_at, events, receipts) == (EmailStatus.DISPATCHED, None, [], 0)


async def test_the_attachment_route_records_its_send_start_later_not_at_the_take(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    email_id = await _add_email(engine, route=Route.ATTACHMENT)

    taken = await _take(statement_sessions, email_id)

    assert taken is not None
    assert (taken.resumed, taken.started_before, taken.start_recorded) == (False, False, False)
    email, events, _ = await _state(engine, email_id)
    assert (email.status, email.send_started_at, events) == (EmailStatus.SENDING, None, ["taken"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_a_take_is_one_statement(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    email_id = await _add_email(engine)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await _take(statement_sessions, email_id) is not None
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert len(statements) == 1, statements
    assert (await _state(engine, email_id))[1] == ["taken"]
