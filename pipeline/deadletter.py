"""Dead-lettering: the message to ``mail.dlx`` with readable headers, a ``dlq`` row, an event.

The headers are what an operator sees in the RabbitMQ management UI (docs/runbooks.md explains
each). They are plain names, not ``x-`` names: ``x-`` headers belong to the broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitMessage
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.db.errors import store_errors
from pipeline.db.events import record_event
from pipeline.db.models import DeadLetter, EmailStatus, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.errors import MailpipeError
from pipeline.messaging import Bus
from pipeline.outcome import delivery_count
from pipeline.topology import DLX

__all__ = ["DeadLetterNote", "dead_letter", "dead_letter_headers", "delivery_dead_letterer"]

MAX_HEADER_CHARS = 1000
MAX_RAW_BODY_CHARS = 100_000


@dataclass(frozen=True)
class DeadLetterNote:
    """Why and where a message died."""

    reason: str
    error: str
    step: str
    attempts: int = 0
    email_id: uuid.UUID | None = None
    publisher_message_id: str | None = None
    mailbox: str | None = None
    original_exchange: str = ""
    original_routing_key: str = ""


def dead_letter_headers(note: DeadLetterNote) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "mailpipe-reason": note.reason,
        "mailpipe-error": note.error[:MAX_HEADER_CHARS],
        "mailpipe-step": note.step,
        "mailpipe-attempts": note.attempts,
        "mailpipe-original-exchange": note.original_exchange,
        "mailpipe-original-routing-key": note.original_routing_key,
        "mailpipe-dead-lettered-at": utcnow().isoformat(),
    }
    if note.email_id is not None:
        headers["mailpipe-incoming-email-id"] = str(note.email_id)
    if note.publisher_message_id is not None:
        headers["mailpipe-publisher-message-id"] = note.publisher_message_id
    if note.mailbox is not None:
        headers["mailpipe-mailbox"] = note.mailbox
    return headers


async def dead_letter(
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
    note: DeadLetterNote,
    body: bytes,
    *,
    message_id: str,
    content_type: str = "application/json",
) -> None:
    """Record ``note`` and put ``body`` on ``mail.dead-letter``; marks the email failed if known.

    The row is written first: a crash before the publish leaves the row (the operator's record)
    and the redelivered message dead-letters again, so the broker copy may repeat, never vanish.
    """
    async with store_errors("dead-lettering"), sessions.begin() as session:
        session.add(
            DeadLetter(
                incoming_email_id=note.email_id,
                publisher_message_id=note.publisher_message_id,
                reason=note.reason,
                step=note.step,
                attempts=note.attempts,
                last_error=note.error,
                raw_body=body[:MAX_RAW_BODY_CHARS].decode("utf-8", errors="replace"),
                mailbox=note.mailbox,
                created_at=utcnow(),
            )
        )
        if note.email_id is not None:
            await session.execute(
                update(IncomingEmail)
                .where(IncomingEmail.id == note.email_id)
                .values(status=EmailStatus.FAILED, last_error=note.error, updated_at=utcnow())
            )
            await record_event(
                session,
                "dead_lettered",
                email_id=note.email_id,
                publisher_message_id=note.publisher_message_id,
                reason=note.reason,
                step=note.step,
                attempts=note.attempts,
                error=note.error[:MAX_HEADER_CHARS],
            )
    await bus.publish(
        body,
        exchange=DLX.name,
        routing_key=note.original_routing_key,
        message_id=message_id,
        headers=dead_letter_headers(note),
        content_type=content_type,
    )
    if note.email_id is not None and note.publisher_message_id is not None:
        await bus.lifecycle(
            "dead-lettered",
            note.publisher_message_id,
            note.email_id,
            utcnow(),
            reason=note.reason,
            step=note.step,
            attempts=note.attempts,
        )


def delivery_dead_letterer(
    bus: Bus,
    sessions: async_sessionmaker[AsyncSession],
    message: RabbitMessage,
    *,
    step: str,
    exchange: str,
    routing_key: str,
    publisher_message_id: Callable[[], str | None] | None = None,
) -> Callable[[Exception], Awaitable[None]]:
    """The dead-letter action of a consumer edge, for :func:`pipeline.outcome.settle`.

    It dead-letters the delivery as it came (body, message id, content type) with the error's
    reason (``unexpected-error`` for one mailpipe did not raise on purpose) and the number of
    deliveries so far. ``publisher_message_id`` is called only then: on the hot path nobody
    parses a body twice to name it.
    """
    raw = message.raw_message

    async def to_dead_letter(error: Exception) -> None:
        note = DeadLetterNote(
            reason=error.reason if isinstance(error, MailpipeError) else "unexpected-error",
            error=str(error),
            step=step,
            attempts=delivery_count(message) + 1,
            publisher_message_id=publisher_message_id() if publisher_message_id is not None else None,
            original_exchange=exchange,
            original_routing_key=routing_key,
        )
        await dead_letter(
            bus,
            sessions,
            note,
            message.body,
            message_id=raw.message_id or f"dead:{uuid.uuid4()}",
            content_type=raw.content_type or "application/octet-stream",
        )

    return to_dead_letter
