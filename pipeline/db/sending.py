"""State changes a send or backup worker makes, each one short transaction (or one statement).

Every update is guarded by the attempt number it belongs to, so a worker holding a stale
dispatch (the sweeper has re-dispatched the email meanwhile) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from pipeline.db.chain import WriteChain, prefixed
from pipeline.db.events import EVENT_WRITE, event_params, record_event
from pipeline.db.models import EmailStatus, IncomingEmail
from pipeline.db.tables import incoming_emails, insert_ignoring_conflicts, sent_emails, worker_receipts

__all__ = [
    "Taken",
    "mark_sent",
    "park",
    "set_draft",
    "set_send_started",
    "take",
    "touch",
]

log = structlog.get_logger(__name__)


#: A worker took the dispatch: its receipt, the email in ``sending``, the timeline event.
_TAKE = WriteChain(
    insert_ignoring_conflicts(
        worker_receipts,
        ["incoming_email_id", "attempt", "pool", "worker", "received_at"],
        returning="id",
        param_prefix="receipt_",
    ),
    update(incoming_emails)
    .where(incoming_emails.c.id == bindparam("receipt_incoming_email_id"))
    .values(status=EmailStatus.SENDING, updated_at=bindparam("receipt_received_at"))
    .returning(incoming_emails.c.id),
    EVENT_WRITE,
)
#: The send happened: its ``sent_emails`` row, the backup scheduled, the timeline event.
_MARK_SENT = WriteChain(
    insert_ignoring_conflicts(
        sent_emails,
        [
            "incoming_email_id",
            "mailbox",
            "correlation_key",
            "method",
            "graph_draft_id",
            "internet_message_id",
            "recovered",
            "sent_at",
        ],
        conflict=["incoming_email_id"],
        returning="id",
        param_prefix="sent_",
    ),
    update(incoming_emails)
    .where(incoming_emails.c.id == bindparam("sent_incoming_email_id"))
    .values(
        status=EmailStatus.BACKUP_WAIT,
        backup_attempt_count=0,
        next_attempt_at=bindparam("backup_at"),
        last_error=None,
        updated_at=bindparam("sent_sent_at"),
    )
    .returning(incoming_emails.c.id),
    EVENT_WRITE,
)


@dataclass(frozen=True)
class Taken:
    """The result of taking a dispatch: the email, and whether this attempt ran before."""

    email: IncomingEmail
    #: True when a worker already took this very attempt and died: its outcome is unknown.
    resumed: bool


async def take(
    session: AsyncSession, email_id: uuid.UUID, attempt: int, *, pool: str, worker: str, now: datetime
) -> Taken | None:
    """Persist the worker receipt and move the email to ``sending``; None if the dispatch is stale."""
    email = (
        await session.execute(select(IncomingEmail).where(IncomingEmail.id == email_id).with_for_update())
    ).scalar_one_or_none()
    if email is None or email.attempt_count != attempt:
        return None
    if email.status not in (EmailStatus.DISPATCHED, EmailStatus.SENDING):
        return None
    # The row is locked, and a worker sets ``sending`` in the transaction that inserts its
    # receipt (a re-dispatch starts a new attempt in ``dispatched``): ``sending`` here means this
    # attempt's receipt exists, so the event can be named before the receipt insert says so.
    resuming = email.status == EmailStatus.SENDING
    inserted, _, _ = await _TAKE.run(
        session,
        {
            **prefixed(
                "receipt_", incoming_email_id=email_id, attempt=attempt, pool=pool, worker=worker, received_at=now
            ),
            **event_params(
                "resumed" if resuming else "taken",
                email_id=email_id,
                publisher_message_id=email.publisher_message_id,
                attempt=attempt,
                worker=worker,
            ),
        },
    )
    if resuming != (inserted == 0):
        log.warning("take: receipt and status disagree", email_id=str(email_id), attempt=attempt, status=email.status)
    # Mirror the write on the loaded object without making the ORM flush it a second time.
    set_committed_value(email, "status", EmailStatus.SENDING)
    set_committed_value(email, "updated_at", now)
    # Resumed if either says so: an unknown outcome is checked in Sent Items before any resend.
    return Taken(email, resumed=resuming or inserted == 0)


def _guard(email_id: uuid.UUID, attempt: int) -> ColumnElement[bool]:
    return and_(incoming_emails.c.id == email_id, incoming_emails.c.attempt_count == attempt)


async def touch(session: AsyncSession, email_id: uuid.UUID, attempt: int, now: datetime) -> bool:
    """Show the sweeper this attempt is alive (long uploads call it per chunk)."""
    result = await session.execute(
        update(incoming_emails)
        .where(_guard(email_id, attempt), incoming_emails.c.status == EmailStatus.SENDING)
        .values(updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_draft(session: AsyncSession, email_id: uuid.UUID, attempt: int, draft_id: str | None) -> None:
    await session.execute(update(incoming_emails).where(_guard(email_id, attempt)).values(graph_draft_id=draft_id))


async def set_send_started(session: AsyncSession, email_id: uuid.UUID, attempt: int, now: datetime | None) -> bool:
    """Record (or clear, with None) that a send call is about to happen; False if stale."""
    result = await session.execute(
        update(incoming_emails)
        .where(_guard(email_id, attempt), incoming_emails.c.status == EmailStatus.SENDING)
        .values(send_started_at=now, updated_at=now or incoming_emails.c.updated_at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_sent(
    session: AsyncSession,
    email: IncomingEmail,
    *,
    method: str,
    recovered: bool,
    internet_message_id: str | None,
    now: datetime,
    backup_at: datetime,
) -> None:
    """The send happened: one ``sent_emails`` row, one event, and the backup scheduled for ``backup_at``.

    One statement (:class:`~pipeline.db.chain.WriteChain`): run it in a statement session.
    """
    await _MARK_SENT.run(
        session,
        {
            **prefixed(
                "sent_",
                incoming_email_id=email.id,
                mailbox=email.mailbox,
                correlation_key=email.correlation_key,
                method=method,
                graph_draft_id=email.graph_draft_id,
                internet_message_id=internet_message_id,
                recovered=recovered,
                sent_at=now,
            ),
            "backup_at": backup_at,
            **event_params(
                "sent",
                email_id=email.id,
                publisher_message_id=email.publisher_message_id,
                method=method,
                recovered=recovered,
                attempt=email.attempt_count,
            ),
        },
    )


async def park(
    session: AsyncSession,
    email: IncomingEmail,
    *,
    status: EmailStatus,
    attempt: int,
    delay_s: float,
    error: str,
    reason: str,
    keep_send_started: bool,
    now: datetime,
) -> None:
    """Put the email aside until ``now + delay_s``; the scheduler dispatches it again then."""
    values: dict[str, object] = {
        "status": status,
        "next_attempt_at": now + timedelta(seconds=delay_s),
        "last_error": error,
        "updated_at": now,
    }
    if not keep_send_started:
        values["send_started_at"] = None
    await session.execute(update(incoming_emails).where(incoming_emails.c.id == email.id).values(**values))
    await record_event(
        session,
        "retry_scheduled",
        email_id=email.id,
        publisher_message_id=email.publisher_message_id,
        attempt=attempt,
        delay_s=round(delay_s, 3),
        reason=reason,
        error=error[:500],
        status=status,
    )
