"""State changes a send or backup worker makes, each one short transaction (or one statement).

Taking a dispatch, the first of them, is :func:`pipeline.db.take.take`.

Every update is guarded by the attempt number it belongs to, so a worker holding a stale
dispatch (the sweeper has re-dispatched the email meanwhile) changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, and_, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession

from pipeline.db.chain import WriteChain, prefixed
from pipeline.db.events import EVENT_WRITE, event_params, record_event
from pipeline.db.models import EmailStatus, IncomingEmail
from pipeline.db.tables import incoming_emails, insert_ignoring_conflicts, sent_emails

__all__ = [
    "mark_sent",
    "park",
    "set_draft",
    "set_send_started",
    "touch",
]

log = structlog.get_logger(__name__)


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
