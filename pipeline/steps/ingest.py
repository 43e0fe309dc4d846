"""Ingest: validate a SendEmail, persist it once, send the receipt, then ack.

Crash analysis (SIGKILL on any line):

* before the commit: nothing stored, the message is redelivered and stored then;
* after the commit, before the ack: the redelivery (``redelivered`` set by the broker) finds the
  row and sends the receipt again, with the same ``message_id``, so a publisher that already
  got one drops the copy. This is the one case of a repeated receipt the publisher contract
  allows (README, "Receipt").

Decision (2026-12-05): the receipt is not also recorded as sent in the database. Doing so cost
a write per email (``receipt_confirmed_at``) to spare a repeat in the window between that write
and the ack only; the window between the publish and that write remained. The column is kept,
unwritten, until no running version writes it, so a rolling upgrade never fails on it.

A re-published duplicate (same ``publisher_message_id``, not a redelivery) never sends a second
receipt; the first copy's delivery, or its redelivery, is responsible for it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faststream.rabbit import RabbitMessage
from pydantic import ValidationError
from sqlalchemy import bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipeline.context import AppContext
from pipeline.db.errors import store_errors
from pipeline.db.events import EVENT_WRITE, event_params
from pipeline.db.models import EmailStatus, Route
from pipeline.db.tables import email_events, incoming_emails, insert_ignoring_conflicts
from pipeline.db.types import utcnow
from pipeline.deadletter import delivery_dead_letterer
from pipeline.errors import InvalidMessage
from pipeline.messages import SendEmail, SendEmailReceived, derive_idempotency_key
from pipeline.observability.edge import bind_ids, observed_settle
from pipeline.observability.tracing import trace_detail
from pipeline.retry import infra_retrying
from pipeline.topology import COMMANDS, EVENTS

__all__ = ["StoredEmail", "handle_send_email", "ingest", "parse_send_email", "store_email"]


def parse_send_email(body: bytes, *, max_bytes: int) -> tuple[SendEmail, dict[str, Any]]:
    """Validate a raw SendEmail body; raise :class:`InvalidMessage` naming what is wrong."""
    if len(body) > max_bytes:
        raise InvalidMessage(
            f"message is {len(body)} bytes; the limit is {max_bytes} (MAILPIPE_MAX_MESSAGE_BYTES). "
            "Send large files as attachments with urlOrId.",
            reason="too-large",
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidMessage(f"body is not JSON: {exc}", reason="not-json") from exc
    if not isinstance(payload, dict):
        raise InvalidMessage("body must be a JSON object", reason="schema")
    try:
        return SendEmail.model_validate(payload), payload
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'message'}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidMessage(f"SendEmail is invalid: {problems}", reason="schema") from exc


@dataclass(frozen=True)
class StoredEmail:
    id: uuid.UUID
    publisher_message_id: str
    created: bool
    received_at: datetime
    status: str


_INSERT_EMAIL = insert_ignoring_conflicts(
    incoming_emails,
    [
        "id",
        "publisher_message_id",
        "idempotency_source",
        "payload",
        "status",
        "route",
        "mailbox",
        "priority",
        "send_at",
        "next_attempt_at",
        "correlation_key",
        "attempt_count",
        "backup_attempt_count",
        "created_at",
        "updated_at",
    ],
    conflict=["publisher_message_id"],
    returning="id",
)
_inserted = _INSERT_EMAIL.cte("inserted")
#: PostgreSQL: the insert and, only if it inserted, its ``received`` event, in one statement.
_INSERT_EMAIL_AND_EVENT = select(_inserted.c.id).add_cte(
    insert(email_events)
    .from_select(
        ["incoming_email_id", "publisher_message_id", "event", "detail", "created_at"],
        select(
            _inserted.c.id,
            bindparam("event_publisher_message_id", type_=email_events.c.publisher_message_id.type),
            bindparam("event_name", type_=email_events.c.event.type),
            bindparam("event_detail", type_=email_events.c.detail.type),
            bindparam("event_at", type_=email_events.c.created_at.type),
        ),
    )
    .returning(email_events.c.id)
    .cte("received_event")
)


async def _insert(session: AsyncSession, values: dict[str, Any], event: dict[str, Any]) -> uuid.UUID | None:
    """Insert the email and its event unless the key exists; the new id, or None."""
    if session.bind.dialect.name == "postgresql":
        return (await session.execute(_INSERT_EMAIL_AND_EVENT, {**values, **event})).scalar_one_or_none()
    inserted: uuid.UUID | None = (await session.execute(_INSERT_EMAIL, values)).scalar_one_or_none()
    if inserted is not None:
        await session.execute(EVENT_WRITE, {**event, "event_email_id": inserted})
    return inserted


async def store_email(ctx: AppContext, email: SendEmail, payload: dict[str, Any]) -> StoredEmail:
    """Insert the email unless its key exists; return the row either way."""
    key = email.publisher_message_id or derive_idempotency_key(payload)
    now = utcnow()
    email_id = uuid.uuid4()
    values = {
        "id": email_id,
        "publisher_message_id": key,
        "idempotency_source": "publisher" if email.publisher_message_id else "derived",
        "payload": email.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": EmailStatus.RECEIVED,
        "route": Route.ATTACHMENT if email.has_attachments else Route.NO_ATTACHMENT,
        "mailbox": email.sender_address,
        "priority": email.priority,
        "send_at": email.send_at,
        "next_attempt_at": max(now, email.send_at) if email.send_at else now,
        "correlation_key": email_id.hex,
        "attempt_count": 0,
        "backup_attempt_count": 0,
        "created_at": now,
        "updated_at": now,
    }
    event = event_params(
        "received",
        email_id=None,  # the id the insert returns
        publisher_message_id=key,
        route=values["route"],
        **trace_detail(),  # the scheduler continues this trace (pipeline.observability.tracing)
    )
    # On PostgreSQL one statement, which commits by itself; on SQLite one transaction.
    async with store_errors("ingest"), ctx.statement_sessions.begin() as session:
        inserted = await _insert(session, values, event)
        if inserted is not None:
            return StoredEmail(inserted, key, True, now, EmailStatus.RECEIVED)
        row = (
            await session.execute(
                select(incoming_emails.c.id, incoming_emails.c.created_at, incoming_emails.c.status).where(
                    incoming_emails.c.publisher_message_id == key
                )
            )
        ).one()
        return StoredEmail(row.id, key, False, row.created_at, row.status)


async def ingest(ctx: AppContext, body: bytes, *, reply_to: str | None, redelivered: bool) -> StoredEmail:
    """Validate, store once and acknowledge receipt; see the module docstring for crash cases."""
    email, payload = parse_send_email(body, max_bytes=ctx.settings.max_message_bytes)
    bind_ids(publisher_message_id=email.publisher_message_id)
    async for attempt in infra_retrying():
        with attempt:
            stored = await store_email(ctx, email, payload)
    bind_ids(publisher_message_id=stored.publisher_message_id, incoming_email_id=stored.id)
    if not (stored.created or redelivered):
        return stored
    receipt = SendEmailReceived(
        publisher_message_id=stored.publisher_message_id,
        incoming_email_id=stored.id,
        received_at=stored.received_at,
        status=stored.status,
    )
    message_id = f"receipt:{stored.id}"
    if reply_to:
        await ctx.bus.reply(
            receipt, reply_to=reply_to, message_id=message_id, correlation_id=stored.publisher_message_id
        )
    await ctx.bus.publish(
        receipt,
        exchange=EVENTS.name,
        routing_key="email.received",
        message_id=message_id,
        correlation_id=stored.publisher_message_id,
        mandatory=False,
    )
    return stored


async def handle_send_email(ctx: AppContext, message: RabbitMessage) -> None:
    """Consumer edge for ``mail.ingest``: convert the delivery, run :func:`ingest`, settle it."""
    raw = message.raw_message
    body: bytes = message.body

    async def work() -> str:
        stored = await ingest(ctx, body, reply_to=raw.reply_to, redelivered=bool(raw.redelivered))
        return "stored" if stored.created else "duplicate"

    to_dead_letter = delivery_dead_letterer(
        ctx.bus,
        ctx.sessions,
        message,
        step="ingest",
        exchange=COMMANDS.name,
        routing_key=raw.routing_key or "send-email",
        publisher_message_id=lambda: _publisher_id_hint(body),
    )

    await observed_settle(ctx, "ingest", message, work, to_dead_letter)


def _publisher_id_hint(body: bytes) -> str | None:
    """Best effort: the publisher's id from an invalid body, so triage can find it."""
    try:
        value = json.loads(body).get("publisher_message_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return str(value)[:255] if value is not None else None
