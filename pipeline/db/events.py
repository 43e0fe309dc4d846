"""Writes to the append-only ``email_events`` timeline.

Rows are inserted with Core statements in the caller's transaction, at once (not at the ORM's
flush), so an event commits with the state change it describes and costs one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from pipeline.db.tables import email_events
from pipeline.db.types import utcnow

__all__ = ["EVENT_WRITE", "event_params", "event_row", "record_event", "record_events"]

#: ``email_events`` columns -> the parameter names :data:`EVENT_WRITE` binds them to, named
#: apart from the other writes of a :class:`~pipeline.db.chain.WriteChain`.
_EVENT_PARAMS = {
    "incoming_email_id": "event_email_id",
    "publisher_message_id": "event_publisher_message_id",
    "event": "event_name",
    "detail": "event_detail",
    "created_at": "event_at",
}

#: One timeline row as a write of a :class:`~pipeline.db.chain.WriteChain`; see :func:`event_params`.
EVENT_WRITE: ReturningInsert[tuple[int]] = (
    insert(email_events)
    .values({column: bindparam(name) for column, name in _EVENT_PARAMS.items()})
    .returning(email_events.c.id)
)


def event_row(
    event: str, *, email_id: uuid.UUID | None, publisher_message_id: str | None, **detail: Any
) -> dict[str, Any]:
    """One ``email_events`` row as parameters, for :func:`record_events`."""
    return {
        "incoming_email_id": email_id,
        "publisher_message_id": publisher_message_id,
        "event": event,
        "detail": detail or None,
        "created_at": utcnow(),
    }


def event_params(
    event: str, *, email_id: uuid.UUID | None, publisher_message_id: str | None, **detail: Any
) -> dict[str, Any]:
    """The same row as :func:`event_row`, as the parameters of :data:`EVENT_WRITE`."""
    row = event_row(event, email_id=email_id, publisher_message_id=publisher_message_id, **detail)
    return {_EVENT_PARAMS[column]: value for column, value in row.items()}


async def record_event(
    session: AsyncSession,
    event: str,
    *,
    email_id: uuid.UUID | None,
    publisher_message_id: str | None,
    **detail: Any,
) -> None:
    """Insert one timeline row in ``session``'s transaction."""
    await record_events(
        session, [event_row(event, email_id=email_id, publisher_message_id=publisher_message_id, **detail)]
    )


async def record_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert many timeline rows with one statement (an executemany)."""
    if rows:
        await session.execute(insert(email_events), list(rows))
