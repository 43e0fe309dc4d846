"""The scheduler's queries: the database is the schedule.

Claims are atomic so no email is dispatched twice by two scheduler replicas, and a pool's
in-flight cap holds across them: on PostgreSQL a claim takes the route's advisory lock, counts
what is in flight after it and takes rows ``FOR UPDATE SKIP LOCKED``; on SQLite every write
transaction is ``BEGIN IMMEDIATE`` (:mod:`pipeline.db.engine`), which serialises them.

:func:`claim_due`, the hot one, is one call of the function ``mailpipe_claim_due`` on
PostgreSQL (migration 0005): run it in a session from ``AppContext.statement_sessions``, where
it is its own transaction. On SQLite it is the same steps in the session's transaction.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, bindparam, column, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipeline.db.events import event_row, record_event, record_events
from pipeline.db.models import EmailStatus, IncomingEmail, Route
from pipeline.db.tables import incoming_emails as emails

__all__ = ["IN_FLIGHT", "Claimed", "cancel", "claim_due", "claim_due_backups", "claim_stuck", "free_slots"]

#: Statuses that hold one of a pool's in-flight slots.
IN_FLIGHT = (EmailStatus.DISPATCHED, EmailStatus.SENDING)
DUE = (EmailStatus.RECEIVED, EmailStatus.RETRY_WAIT)


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    publisher_message_id: str
    route: str
    attempt: int


def free_slots(cap: int, in_flight: int, batch: int) -> int:
    """How many emails one round may dispatch: never past the cap, never more than a batch."""
    return max(0, min(cap - in_flight, batch))


def _route_lock_key(route: str) -> int:
    return zlib.crc32(f"mailpipe.route.{route}".encode())


async def _lock_route(session: AsyncSession, route: str) -> None:
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _route_lock_key(route)})


_CLAIM_CALL = (
    text(
        "SELECT claimed_id, claimed_publisher_message_id, claimed_attempt"
        " FROM mailpipe_claim_due(:route, :cap, :batch, :now, :lock_key)"
    )
    .bindparams(bindparam("now", type_=emails.c.dispatched_at.type))
    .columns(
        column("claimed_id", emails.c.id.type),
        column("claimed_publisher_message_id", String),
        column("claimed_attempt", Integer),
    )
)


async def claim_due(session: AsyncSession, route: str, cap: int, batch: int, now: datetime) -> list[Claimed]:
    """Mark up to the free slots of ``route``'s due emails dispatched and return them, in order.

    The order is the claim's: priority, then due time, then age. Never more than ``batch``,
    never past ``cap`` emails of the route in flight (``dispatched`` or ``sending``).
    """
    if session.bind.dialect.name == "postgresql":
        params = {"route": route, "cap": cap, "batch": batch, "now": now, "lock_key": _route_lock_key(route)}
        rows = (await session.execute(_CLAIM_CALL, params)).all()
        return [Claimed(row.claimed_id, row.claimed_publisher_message_id, route, row.claimed_attempt) for row in rows]
    # Due rows first: an idle route then costs one query, not a count as well. Rows locked
    # beyond the free slots are released at commit, unchanged.
    rows = (
        await session.execute(
            select(emails.c.id, emails.c.publisher_message_id, emails.c.attempt_count)
            .where(emails.c.route == route, emails.c.status.in_(DUE), emails.c.next_attempt_at <= now)
            .order_by(emails.c.priority, emails.c.next_attempt_at, emails.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    in_flight = await session.scalar(
        select(func.count()).where(emails.c.route == route, emails.c.status.in_(IN_FLIGHT))
    )
    limit = free_slots(cap, int(in_flight or 0), batch)
    chosen = [(r.id, r.publisher_message_id, r.attempt_count) for r in rows[:limit]]
    return await _mark_dispatched(session, chosen, route, now)


async def _mark_dispatched(
    session: AsyncSession, rows: list[tuple[uuid.UUID, str, int]], route: str, now: datetime
) -> list[Claimed]:
    if not rows:
        return []
    # One statement for the whole batch, and one for its events: the claim is the hot path.
    await session.execute(
        update(emails)
        .where(emails.c.id.in_([email_id for email_id, _, _ in rows]))
        .values(
            status=EmailStatus.DISPATCHED,
            attempt_count=emails.c.attempt_count + 1,
            dispatched_at=now,
            updated_at=now,
        )
    )
    claimed = [Claimed(email_id, publisher_id, route, attempts + 1) for email_id, publisher_id, attempts in rows]
    await record_events(
        session,
        [
            event_row(
                "dispatched", email_id=c.id, publisher_message_id=c.publisher_message_id, route=route, attempt=c.attempt
            )
            for c in claimed
        ],
    )
    return claimed


async def claim_due_backups(session: AsyncSession, batch: int, now: datetime) -> list[Claimed]:
    """Parked backups that are due again; they go back to ``sent`` and to the backup queue."""
    await _lock_route(session, Route.BACKUP)
    rows = (
        await session.execute(
            select(emails.c.id, emails.c.publisher_message_id, emails.c.backup_attempt_count)
            .where(emails.c.status == EmailStatus.BACKUP_WAIT, emails.c.next_attempt_at <= now)
            .order_by(emails.c.next_attempt_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    if not rows:
        return []
    await session.execute(
        update(emails)
        .where(emails.c.id.in_([row.id for row in rows]))
        .values(status=EmailStatus.SENT, backup_attempt_count=emails.c.backup_attempt_count + 1, updated_at=now)
    )
    claimed = [Claimed(row.id, row.publisher_message_id, Route.BACKUP, row.backup_attempt_count + 1) for row in rows]
    await record_events(
        session,
        [
            event_row(
                "backup_dispatched", email_id=c.id, publisher_message_id=c.publisher_message_id, attempt=c.attempt
            )
            for c in claimed
        ],
    )
    return claimed


async def claim_stuck(
    session: AsyncSession, *, dispatch_timeout_s: float, stuck_timeout_s: float, batch: int, now: datetime
) -> list[Claimed]:
    """Emails a worker never took, or took and then went silent on: dispatch them again.

    A lost dispatch (scheduler died between commit and publish) waits ``dispatch_timeout_s``;
    an email in ``sending`` waits ``stuck_timeout_s`` (a live worker keeps ``updated_at``
    fresh). The new attempt number makes the old dispatch stale, and the worker's duplicate
    check runs before any resend. Sent emails whose backup went quiet are re-queued too.
    """
    dispatched_before = now - timedelta(seconds=dispatch_timeout_s)
    sending_before = now - timedelta(seconds=stuck_timeout_s)
    rows = (
        await session.execute(
            select(
                IncomingEmail.id,
                IncomingEmail.publisher_message_id,
                IncomingEmail.route,
                IncomingEmail.attempt_count,
                IncomingEmail.status,
                IncomingEmail.backup_attempt_count,
            )
            .where(
                ((IncomingEmail.status == EmailStatus.DISPATCHED) & (IncomingEmail.updated_at < dispatched_before))
                | (
                    IncomingEmail.status.in_((EmailStatus.SENDING, EmailStatus.SENT))
                    & (IncomingEmail.updated_at < sending_before)
                )
            )
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
    ).all()
    claimed = []
    for row in rows:
        if row.status == EmailStatus.SENT:
            attempt = row.backup_attempt_count + 1
            await session.execute(
                update(emails).where(emails.c.id == row.id).values(backup_attempt_count=attempt, updated_at=now)
            )
            await record_event(
                session,
                "backup_redispatched",
                email_id=row.id,
                publisher_message_id=row.publisher_message_id,
                attempt=attempt,
            )
            claimed.append(Claimed(row.id, row.publisher_message_id, Route.BACKUP, attempt))
            continue
        attempt = row.attempt_count + 1
        await session.execute(
            update(emails)
            .where(emails.c.id == row.id)
            .values(status=EmailStatus.DISPATCHED, attempt_count=attempt, dispatched_at=now, updated_at=now)
        )
        await record_event(
            session,
            "redispatched",
            email_id=row.id,
            publisher_message_id=row.publisher_message_id,
            attempt=attempt,
            was=row.status,
        )
        claimed.append(Claimed(row.id, row.publisher_message_id, row.route, attempt))
    return claimed


async def cancel(session: AsyncSession, publisher_message_id: str, now: datetime) -> tuple[uuid.UUID | None, str]:
    """Cancel an email that no worker has started sending; return its id and the outcome."""
    row = (
        await session.execute(
            select(IncomingEmail).where(IncomingEmail.publisher_message_id == publisher_message_id).with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        return None, "unknown"
    if row.status not in DUE or row.send_started_at is not None:
        await record_event(
            session,
            "cancel_refused",
            email_id=row.id,
            publisher_message_id=publisher_message_id,
            status=row.status,
        )
        return row.id, f"refused:{row.status}"
    row.status = EmailStatus.CANCELLED
    row.updated_at = now
    await record_event(session, "cancelled", email_id=row.id, publisher_message_id=publisher_message_id)
    return row.id, "cancelled"
