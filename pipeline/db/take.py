"""A send worker takes a dispatch: its receipt, the email in ``sending``, the timeline event.

:func:`take` is the first write of every send attempt and commits before any Graph call. It
locks the email's row, checks that the dispatch is current (same attempt, status
``dispatched`` or ``sending``), and then, atomically:

* inserts the worker receipt (unique per email, attempt and pool);
* sets ``sending``, and on the no-attachment route also ``send_started_at`` (kept if already
  set). That route's next Graph call is the send itself, so recording the start here saves the
  worker a separate write just before it. The cost is on crashed attempts only: one that dies
  between this commit and the send call is later checked in Sent Items before it is sent,
  exactly like one that died during the call. The attachment route records the start after its
  uploads (:func:`pipeline.db.sending.set_send_started`);
* appends ``taken``, or ``resumed`` when this attempt's receipt existed already.

On PostgreSQL that is one statement in autocommit (a locking CTE and three data-modifying CTEs):
one round trip instead of BEGIN, the locked read, the writes and COMMIT. On SQLite it is the
same steps in one transaction. Run it in a session from ``AppContext.statement_sessions``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import BindParameter, Case, Integer, bindparam, case, column, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from pipeline.db.chain import WriteChain, prefixed
from pipeline.db.events import EVENT_WRITE, event_params
from pipeline.db.models import EmailStatus, IncomingEmail, Route
from pipeline.db.tables import email_events, incoming_emails, insert_ignoring_conflicts, worker_receipts

__all__ = ["Taken", "take"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Taken:
    """The result of taking a dispatch."""

    #: The email as the take left it (``sending``).
    email: IncomingEmail
    #: True when a worker already took this very attempt and died: its outcome is unknown.
    resumed: bool
    #: True when an earlier try recorded a send start that nobody has ruled out since.
    started_before: bool
    #: True when this take recorded ``send_started_at`` itself (the no-attachment route).
    start_recorded: bool


def _started_at_take(now: BindParameter[datetime]) -> Case[datetime | None]:
    """``send_started_at`` after a take: set on the no-attachment route, the earliest kept."""
    return case(
        (
            incoming_emails.c.route == Route.NO_ATTACHMENT,
            func.coalesce(incoming_emails.c.send_started_at, now),
        ),
        else_=incoming_emails.c.send_started_at,
    )


#: SQLite: after the locked read, in the same transaction.
_TAKE_WRITES = WriteChain(
    insert_ignoring_conflicts(
        worker_receipts,
        ["incoming_email_id", "attempt", "pool", "worker", "received_at"],
        returning="id",
        param_prefix="receipt_",
    ),
    update(incoming_emails)
    .where(incoming_emails.c.id == bindparam("receipt_incoming_email_id"))
    .values(
        status=EmailStatus.SENDING,
        updated_at=bindparam("receipt_received_at"),
        send_started_at=_started_at_take(bindparam("receipt_received_at")),
    )
    .returning(incoming_emails.c.id),
    EVENT_WRITE,
)

_COLUMNS = [c.name for c in incoming_emails.c]
_CURRENT = f"status IN ('{EmailStatus.DISPATCHED}', '{EmailStatus.SENDING}')"
#: PostgreSQL: everything in one statement. ``locked`` holds the row as it was before the
#: writes (the CTEs all see the same snapshot), which is what ``resumed`` and the event's name
#: are decided on. The row lock taken by ``FOR UPDATE`` re-reads the newest committed version.
_TAKE_STATEMENT = (
    text(
        f"""
WITH locked AS MATERIALIZED (
    SELECT * FROM incoming_emails
    WHERE id = :take_email_id AND attempt_count = :take_attempt AND {_CURRENT}
    FOR UPDATE
),
receipt AS (
    INSERT INTO worker_receipts (incoming_email_id, attempt, pool, worker, received_at)
    SELECT id, attempt_count, :take_pool, :take_worker, :take_now FROM locked
    ON CONFLICT DO NOTHING
    RETURNING id
),
taken AS (
    UPDATE incoming_emails SET
        status = '{EmailStatus.SENDING}',
        updated_at = :take_now,
        send_started_at = CASE WHEN incoming_emails.route = '{Route.NO_ATTACHMENT}'
            THEN COALESCE(incoming_emails.send_started_at, :take_now)
            ELSE incoming_emails.send_started_at END
    FROM locked WHERE incoming_emails.id = locked.id
    RETURNING incoming_emails.id
),
event AS (
    INSERT INTO email_events (incoming_email_id, publisher_message_id, event, detail, created_at)
    SELECT id, publisher_message_id,
        CASE WHEN status = '{EmailStatus.SENDING}' THEN 'resumed' ELSE 'taken' END,
        :take_event_detail, :take_now
    FROM locked
    RETURNING id
)
SELECT {", ".join(f"locked.{name}" for name in _COLUMNS)},
    (SELECT count(*) FROM receipt) AS receipts_inserted
FROM locked
"""  # noqa: S608 - only the table's own column names and the status constants are interpolated
    )
    .bindparams(
        bindparam("take_email_id", type_=incoming_emails.c.id.type),
        bindparam("take_attempt", type_=incoming_emails.c.attempt_count.type),
        bindparam("take_pool", type_=worker_receipts.c.pool.type),
        bindparam("take_worker", type_=worker_receipts.c.worker.type),
        bindparam("take_now", type_=worker_receipts.c.received_at.type),
        bindparam("take_event_detail", type_=email_events.c.detail.type),
    )
    # Data-modifying CTEs run to completion whether or not the final SELECT reads them.
    .columns(*incoming_emails.c, column("receipts_inserted", Integer))
)


async def take(
    session: AsyncSession, email_id: uuid.UUID, attempt: int, *, pool: str, worker: str, now: datetime
) -> Taken | None:
    """Take the dispatch as the module docstring says; None if it is stale (nothing written)."""
    if session.bind.dialect.name == "postgresql":
        return await _take_in_one_statement(session, email_id, attempt, pool=pool, worker=worker, now=now)
    return await _take_in_transaction(session, email_id, attempt, pool=pool, worker=worker, now=now)


def _taken(email: IncomingEmail, *, resuming: bool, receipts_inserted: int, now: datetime) -> Taken:
    if resuming != (receipts_inserted == 0):
        log.warning("take: receipt and status disagree", email_id=str(email.id), status=email.status)
    started_before = email.send_started_at is not None
    start_recorded = email.route == Route.NO_ATTACHMENT
    # Mirror the writes on the object without making the ORM flush them a second time.
    set_committed_value(email, "status", EmailStatus.SENDING)
    set_committed_value(email, "updated_at", now)
    if start_recorded and not started_before:
        set_committed_value(email, "send_started_at", now)
    # Resumed if either says so: an unknown outcome is checked in Sent Items before any resend.
    return Taken(
        email,
        resumed=resuming or receipts_inserted == 0,
        started_before=started_before,
        start_recorded=start_recorded,
    )


async def _take_in_one_statement(
    session: AsyncSession, email_id: uuid.UUID, attempt: int, *, pool: str, worker: str, now: datetime
) -> Taken | None:
    row = (
        await session.execute(
            _TAKE_STATEMENT,
            {
                "take_email_id": email_id,
                "take_attempt": attempt,
                "take_pool": pool,
                "take_worker": worker,
                "take_now": now,
                "take_event_detail": {"attempt": attempt, "worker": worker},
            },
        )
    ).one_or_none()
    if row is None:
        return None
    values = row._mapping
    email = IncomingEmail()
    for name in _COLUMNS:
        set_committed_value(email, name, values[name])
    return _taken(
        email, resuming=email.status == EmailStatus.SENDING, receipts_inserted=values["receipts_inserted"], now=now
    )


async def _take_in_transaction(
    session: AsyncSession, email_id: uuid.UUID, attempt: int, *, pool: str, worker: str, now: datetime
) -> Taken | None:
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
    inserted, _, _ = await _TAKE_WRITES.run(
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
    return _taken(email, resuming=resuming, receipts_inserted=inserted, now=now)
