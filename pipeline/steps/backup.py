"""Backup worker: find the Sent Items copy, fetch its MIME, store it gzipped (and sealed) once.

The copy in Sent Items has a different id from the draft (Graph creates a new item on send)
and may appear seconds after the send, so it is found by correlation key; "not there yet" parks
the backup for a short retry instead of holding the consumer. ``email_backups.graph_message_id``
is unique, so a redelivered or re-dispatched backup stores nothing twice.

The MIME is streamed from Graph through gzip and the seal into a spool
(:mod:`pipeline.archive`), so the worker's memory does not grow with the message; the database
transaction starts once the message is whole. A backup of up to 1 MiB is stored with its status
and event in one statement (PostgreSQL) as before; a larger one in one transaction with its parts.

Crash analysis: killed before the store commits -> the redelivery does it all again (reads are
idempotent; the spool, an unnamed temporary file, goes with the process); the backup row, its
parts, the status and the event commit together, so no backup is left without its parts or
marked ``backed_up`` without its row. After the commit, before the ack -> the redelivery sees
``backed_up`` and acks. A backup stored by an earlier attempt is skipped on conflict (its parts
with it) and the status set.
"""

from __future__ import annotations

import uuid

import structlog
from faststream.rabbit import RabbitMessage
from pydantic import ValidationError
from sqlalchemy import bindparam, select, update

from pipeline.archive import Archive, ArchiveWriter
from pipeline.backups import backup_context, store_parts
from pipeline.context import AppContext
from pipeline.db import sending
from pipeline.db.chain import WriteChain, prefixed
from pipeline.db.errors import store_errors
from pipeline.db.events import EVENT_WRITE, event_params
from pipeline.db.models import EmailStatus, IncomingEmail, SentEmail
from pipeline.db.tables import email_backups, incoming_emails, insert_ignoring_conflicts, sent_emails
from pipeline.db.types import utcnow
from pipeline.deadletter import DeadLetterNote, dead_letter, delivery_dead_letterer
from pipeline.errors import (
    BrokerUnavailable,
    GraphUnavailable,
    InvalidMessage,
    MailpipeError,
    StoreUnavailable,
)
from pipeline.graph import MessageInfo
from pipeline.messages import BackupRequest
from pipeline.observability.edge import (
    bind_ids,
    note_backup,
    note_dead_letter,
    note_retry,
    note_stage,
    observed_settle,
)
from pipeline.outcome import Action, decide
from pipeline.retry import retry_policy
from pipeline.topology import DISPATCH

__all__ = ["handle_backup", "process_backup"]

log = structlog.get_logger(__name__)


_INSERT_BACKUP = insert_ignoring_conflicts(
    email_backups,
    [
        "incoming_email_id",
        "graph_message_id",
        "compressed_blob",
        "compression",
        "size",
        "checksum",
        "encryption",
        "key_id",
        "created_at",
        "parts",
    ],
    conflict=["graph_message_id"],
    returning="id",
    param_prefix="backup_",
)
_BACKED_UP = (
    update(incoming_emails)
    .where(incoming_emails.c.id == bindparam("backup_incoming_email_id"))
    .values(status=EmailStatus.BACKED_UP, updated_at=bindparam("backup_created_at"))
    .returning(incoming_emails.c.id)
)
_LOCATED = (
    update(sent_emails)
    .where(sent_emails.c.id == bindparam("sent_id"))
    .values(
        graph_message_id=bindparam("backup_graph_message_id"),
        internet_message_id=bindparam("located_internet_message_id"),
    )
    .returning(sent_emails.c.id)
)
#: The backup, the email's new status and the event; with the located id when it was looked up.
_STORE = WriteChain(_INSERT_BACKUP, _BACKED_UP, EVENT_WRITE)
_STORE_LOCATED = WriteChain(_LOCATED, _INSERT_BACKUP, _BACKED_UP, EVENT_WRITE)
#: After a backup stored in parts: the status and the event, with the located id if looked up.
_FINISH = WriteChain(_BACKED_UP, EVENT_WRITE)
_FINISH_LOCATED = WriteChain(_LOCATED, _BACKED_UP, EVENT_WRITE)


async def _load(ctx: AppContext, email_id: uuid.UUID) -> tuple[IncomingEmail, SentEmail] | None:
    async with store_errors("backup load"), ctx.statement_sessions.begin() as session:
        row = (
            await session.execute(
                select(IncomingEmail, SentEmail)
                .join(SentEmail, SentEmail.incoming_email_id == IncomingEmail.id)
                .where(IncomingEmail.id == email_id)
            )
        ).first()
    return (row[0], row[1]) if row is not None else None


async def _archive(ctx: AppContext, email: IncomingEmail, located: MessageInfo) -> Archive:
    """Fetch the MIME of the sent copy into an archive, a piece at a time."""
    writer = ArchiveWriter(ctx.keyring, backup_context(located.id))
    try:
        await ctx.require_mailer().copy_mime(email.mailbox, located.id, writer.write)
    except BaseException:
        writer.abort()
        raise
    return writer.finish()


async def _store(
    ctx: AppContext, email: IncomingEmail, sent: SentEmail, located: MessageInfo, archive: Archive
) -> None:
    graph_message_id = located.id
    blob = archive.blob
    now = utcnow()
    params = {
        "sent_id": sent.id,
        "located_internet_message_id": located.internet_message_id,
        **prefixed(
            "backup_",
            incoming_email_id=email.id,
            graph_message_id=graph_message_id,
            compressed_blob=b"" if blob.parts else blob.inline(),
            compression="gzip",
            size=archive.size,
            checksum=archive.checksum,
            encryption=blob.encryption,
            key_id=blob.key_id,
            created_at=now,
            parts=blob.parts,
        ),
        **event_params(
            "backed_up",
            email_id=email.id,
            publisher_message_id=email.publisher_message_id,
            graph_message_id=graph_message_id,
            size=archive.size,
            compressed=blob.size,
        ),
    }
    looked_up = sent.graph_message_id is None
    if not blob.parts:
        async with store_errors("backup store"), ctx.statement_sessions.begin() as session:
            await (_STORE_LOCATED if looked_up else _STORE).run(session, params)
    else:
        async with store_errors("backup store"), ctx.sessions.begin() as session:
            backup_id = (await session.execute(_INSERT_BACKUP, params)).scalar_one_or_none()
            if backup_id is not None:  # None: an earlier attempt stored it, parts and all
                await store_parts(session, backup_id, blob)
            await (_FINISH_LOCATED if looked_up else _FINISH).run(session, params)
    await ctx.bus.lifecycle(
        "backed-up",
        email.publisher_message_id,
        email.id,
        now,
        graph_message_id=graph_message_id,
        size=archive.size,
    )


async def _locate(ctx: AppContext, email: IncomingEmail, sent: SentEmail) -> MessageInfo:
    """The Sent Items copy: as ``sent_emails`` knows it, or looked up by correlation key.

    A looked-up id is written by :func:`_store`, in the backup's own transaction: a failure in
    between costs one more look-up on the next attempt, not a transaction per email.
    """
    if sent.graph_message_id:
        return MessageInfo(sent.graph_message_id, sent.internet_message_id, is_draft=False)
    found = await ctx.require_mailer().find_by_correlation(email.mailbox, email.correlation_key, "SentItems")
    if found is None:
        raise GraphUnavailable(
            f"the sent copy of {email.id} is not in Sent Items yet",
            retry_after_s=ctx.settings.graph_sent_lookup_interval_s,
        )
    return found


async def process_backup(ctx: AppContext, request: BackupRequest) -> str:
    """Back up one sent email; returns what happened."""
    loaded = await _load(ctx, request.incoming_email_id)
    if loaded is None:
        return "unknown"
    email, sent = loaded
    if email.status != EmailStatus.SENT or email.backup_attempt_count != request.attempt:
        return "stale"
    try:
        located = await _locate(ctx, email, sent)
        bind_ids(graph_message_id=located.id)
        archive = await _archive(ctx, email, located)
        with archive.blob:
            await _store(ctx, email, sent, located, archive)
        note_stage(ctx, "sent_to_backed_up", sent.sent_at)
    except (StoreUnavailable, BrokerUnavailable):
        raise
    except MailpipeError as exc:
        await _fail(ctx, email, request.attempt, exc)
        return "failed"
    return "backed-up"


async def _fail(ctx: AppContext, email: IncomingEmail, attempt: int, error: MailpipeError) -> None:
    settings = ctx.settings
    policy = retry_policy(settings, "backup")
    decision = decide(error, attempt=attempt, policy=policy)
    if decision.action == Action.PARK:
        async with store_errors("backup park"), ctx.sessions.begin() as session:
            await sending.park(
                session,
                email,
                status=EmailStatus.BACKUP_WAIT,
                attempt=attempt,
                delay_s=decision.delay_s,
                error=str(error),
                reason=decision.reason,
                keep_send_started=True,
                now=utcnow(),
            )
        note_retry(ctx, "backup", decision.reason)
        return
    note_dead_letter(ctx, "backup", decision.reason)
    await dead_letter(
        ctx.bus,
        ctx.sessions,
        DeadLetterNote(
            reason=decision.reason,
            error=str(error),
            step="backup",
            attempts=attempt,
            email_id=email.id,
            publisher_message_id=email.publisher_message_id,
            mailbox=email.mailbox,
            original_exchange=DISPATCH.name,
            original_routing_key="backup",
        ),
        BackupRequest(incoming_email_id=email.id, publisher_message_id=email.publisher_message_id, attempt=attempt)
        .model_dump_json()
        .encode(),
        message_id=f"dead:backup:{email.id}:{attempt}",
    )


async def handle_backup(ctx: AppContext, message: RabbitMessage) -> None:
    body: bytes = message.body

    async def work() -> str:
        try:
            request = BackupRequest.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidMessage(f"backup request is invalid: {exc}", reason="schema") from exc
        bind_ids(incoming_email_id=request.incoming_email_id, publisher_message_id=request.publisher_message_id)
        outcome = await process_backup(ctx, request)
        note_backup(ctx, outcome)
        log.debug("backup handled", outcome=outcome, email_id=str(request.incoming_email_id))
        return outcome

    to_dead_letter = delivery_dead_letterer(
        ctx.bus, ctx.sessions, message, step="backup", exchange=DISPATCH.name, routing_key="backup"
    )

    await observed_settle(ctx, "backup", message, work, to_dead_letter)
