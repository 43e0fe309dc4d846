"""The scheduler's queries on a real database: order, due times, caps, cancel and the sweeper."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.db import schedule
from pipeline.db.engine import create_engine, create_sessionmaker
from pipeline.db.models import EmailEvent, EmailStatus, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.settings import Settings


def _email(n: int, **values: object) -> IncomingEmail:
    email_id = uuid.uuid4()
    row = IncomingEmail(
        id=email_id,
        publisher_message_id=f"m{n}",
        idempotency_source="publisher",
        payload={},
        status=EmailStatus.RECEIVED,
        route="no-attachment",
        mailbox="a@x.example",
        priority=5,
        next_attempt_at=utcnow() - timedelta(seconds=10),
        attempt_count=0,
        backup_attempt_count=0,
        correlation_key=email_id.hex,
        created_at=utcnow() - timedelta(seconds=100 - n),
        updated_at=utcnow(),
    )
    for key, value in values.items():
        setattr(row, key, value)
    return row


async def _sessions(database_url: str) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(create_engine(Settings(database_url=database_url)))


async def test_due_emails_are_claimed_by_priority_then_age_and_never_past_the_cap(
    database_url: str, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    sessions = await _sessions(database_url)
    async with sessions.begin() as session:
        session.add_all(
            [
                _email(0, priority=9),
                _email(1, priority=1),
                _email(2, priority=5),
                _email(3, priority=1),
                _email(4, send_at=utcnow() + timedelta(hours=1), next_attempt_at=utcnow() + timedelta(hours=1)),
                _email(5, status=EmailStatus.DISPATCHED),
            ]
        )
    # As the scheduler claims: in a statement session (autocommit on PostgreSQL).
    async with statement_sessions.begin() as session:
        first = await schedule.claim_due(session, "no-attachment", cap=3, batch=10, now=utcnow())
    assert [c.publisher_message_id for c in first] == ["m1", "m3"]  # one slot is taken by m5
    assert all(c.attempt == 1 and c.route == "no-attachment" for c in first)
    async with statement_sessions.begin() as session:
        assert await schedule.claim_due(session, "no-attachment", cap=3, batch=10, now=utcnow()) == []
    async with sessions.begin() as session:
        await session.execute(
            IncomingEmail.__table__.update()
            .where(IncomingEmail.publisher_message_id.in_(["m1", "m3", "m5"]))
            .values(status=EmailStatus.SENT)
        )
    async with statement_sessions.begin() as session:
        rest = await schedule.claim_due(session, "no-attachment", cap=3, batch=10, now=utcnow())
    assert [c.publisher_message_id for c in rest] == ["m2", "m0"]  # m4 is not due before send_at
    async with sessions() as session:
        rows = (await session.execute(select(IncomingEmail.publisher_message_id, IncomingEmail.status))).all()
        events = (
            await session.execute(select(EmailEvent.publisher_message_id, EmailEvent.event, EmailEvent.detail))
        ).all()
    assert {pmid for pmid, status in rows if status == EmailStatus.DISPATCHED} == {"m2", "m0"}
    dispatched = sorted((pmid, detail) for pmid, event, detail in events if event == "dispatched")
    assert dispatched == [(f"m{n}", {"route": "no-attachment", "attempt": 1}) for n in (0, 1, 2, 3)]
    await sessions.kw["bind"].dispose()


async def test_concurrent_claims_never_pass_the_cap(
    database_url: str, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Scheduler replicas claiming at once: each counts what is in flight after the others' claims."""
    sessions = await _sessions(database_url)
    async with sessions.begin() as session:
        session.add_all([_email(n) for n in range(40)])

    async def claim() -> list[schedule.Claimed]:
        async with statement_sessions.begin() as session:
            return await schedule.claim_due(session, "no-attachment", cap=7, batch=3, now=utcnow())

    rounds = [await asyncio.gather(*(claim() for _ in range(12))) for _ in range(3)]

    claimed = [c.publisher_message_id for claims in rounds for batch in claims for c in batch]
    assert len(claimed) == 7
    assert len(set(claimed)) == 7
    async with sessions() as session:
        in_flight = await session.scalar(select(func.count()).where(IncomingEmail.status == EmailStatus.DISPATCHED))
    assert in_flight == 7
    await sessions.kw["bind"].dispose()


async def test_cancel_works_before_dispatch_and_is_refused_after(database_url: str) -> None:
    sessions = await _sessions(database_url)
    async with sessions.begin() as session:
        session.add_all([_email(0), _email(1, status=EmailStatus.SENDING)])
    async with sessions.begin() as session:
        assert (await schedule.cancel(session, "m0", utcnow()))[1] == "cancelled"
        assert (await schedule.cancel(session, "m1", utcnow()))[1] == "refused:sending"
        assert (await schedule.cancel(session, "nope", utcnow())) == (None, "unknown")
    async with sessions.begin() as session:
        assert await schedule.claim_due(session, "no-attachment", cap=10, batch=10, now=utcnow()) == []
    await sessions.kw["bind"].dispose()


async def test_sweeper_redispatches_lost_and_stuck_emails_with_a_new_attempt(database_url: str) -> None:
    sessions = await _sessions(database_url)
    old = utcnow() - timedelta(minutes=30)
    async with sessions.begin() as session:
        session.add_all(
            [
                _email(0, status=EmailStatus.DISPATCHED, attempt_count=1, updated_at=old),
                _email(1, status=EmailStatus.SENDING, attempt_count=2, updated_at=old),
                _email(2, status=EmailStatus.SENDING, attempt_count=1, updated_at=utcnow()),
                _email(3, status=EmailStatus.SENT, backup_attempt_count=1, updated_at=old),
            ]
        )
    async with sessions.begin() as session:
        claims = await schedule.claim_stuck(session, dispatch_timeout_s=60, stuck_timeout_s=300, batch=10, now=utcnow())
    by_key = {c.publisher_message_id: c for c in claims}
    assert set(by_key) == {"m0", "m1", "m3"}
    assert (by_key["m0"].attempt, by_key["m1"].attempt) == (2, 3)
    assert by_key["m3"].route == "backup"
    await sessions.kw["bind"].dispose()
