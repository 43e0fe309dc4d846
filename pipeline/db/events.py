"""Writes to the append-only ``email_events`` timeline."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from pipeline.db.models import EmailEvent
from pipeline.db.types import utcnow

__all__ = ["record_event"]


def record_event(
    session: AsyncSession,
    event: str,
    *,
    email_id: uuid.UUID | None,
    publisher_message_id: str | None,
    **detail: Any,
) -> None:
    """Add one timeline row to ``session``; it commits with the state change it describes."""
    session.add(
        EmailEvent(
            incoming_email_id=email_id,
            publisher_message_id=publisher_message_id,
            event=event,
            detail=detail or None,
            created_at=utcnow(),
        )
    )
