"""Send workers (both pools): take a dispatch, send through Graph exactly once, hand to backup.

Order of every attempt, and what a SIGKILL at each point leads to:

1. receipt + ``sending`` committed (:func:`pipeline.db.take.take`) — before any Graph call.
   Killed after: the redelivered dispatch finds its own receipt and runs the duplicate check.
   On the no-attachment route the take also records ``send_started_at`` (step 4), which saves
   a write per email and only makes a crashed attempt run the check of step 2.
2. if an earlier try started a send (``send_started_at`` set), look for the sent copy in Sent
   Items by correlation key, for up to ``graph_sent_lookup_deadline_s``; found -> record sent.
3. no-attachment pool: ``sendMail``. attachment pool: draft (found again in Drafts by
   correlation key if it was created before a crash), attachments (:mod:`.attachments`), ``send``.
4. ``send_started_at`` is committed before the send call (by the take, or just before the call
   after uploads or a Sent Items check) and kept if the call's outcome is unknown (504,
   timeout, crash), so the next try checks before sending again.
5. the ``sent_emails`` row committed with the backup scheduled ``backup_delay_s`` later (the
   scheduler dispatches it: the database is the schedule, so no backup request can be lost),
   then ``email.sent`` published, then ack. Killed before the ack: the redelivery is stale.

Residual risk (documented in the README): Graph has no idempotency key. If a send was accepted
but its Sent Items copy appears only after the look-up deadline, the email is sent again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import structlog
from faststream.rabbit import RabbitMessage
from pydantic import ValidationError

from pipeline.context import AppContext
from pipeline.db import sending
from pipeline.db.errors import store_errors
from pipeline.db.models import EmailStatus, IncomingEmail, Route
from pipeline.db.take import take
from pipeline.db.types import utcnow
from pipeline.deadletter import DeadLetterNote, dead_letter, delivery_dead_letterer
from pipeline.errors import (
    AttachmentUnavailable,
    BrokerUnavailable,
    GraphUnavailable,
    InvalidMessage,
    MailpipeError,
    SendOutcomeUnknown,
    StoreUnavailable,
)
from pipeline.graph import GraphMailer, MessageInfo
from pipeline.messages import Dispatch
from pipeline.observability.edge import bind_ids, note_dead_letter, note_retry, note_stage, observed_settle
from pipeline.outcome import Action, decide
from pipeline.retry import retry_policy
from pipeline.settings import RetryStep
from pipeline.steps.attachments import attach_all
from pipeline.steps.compose import outgoing_message
from pipeline.topology import DISPATCH

__all__ = ["MAX_LOOKUP_FAILURES_IN_A_ROW", "find_sent_copy", "handle_dispatch", "process_dispatch"]

log = structlog.get_logger(__name__)


#: Failed Sent Items polls in a row that one look-up window tolerates after a clean answer.
MAX_LOOKUP_FAILURES_IN_A_ROW = 3


async def find_sent_copy(ctx: AppContext, mailer: GraphMailer, email: IncomingEmail) -> MessageInfo | None:
    """Poll Sent Items for the email's correlation key until found or the deadline passes.

    Returns the copy, or None only after a look-up that answered cleanly at or after the
    deadline: that answer is what "not sent" rests on. Errors end the search (the attempt is
    parked with its outcome still unknown) in three cases:

    * the window's first poll fails: Graph may be down, so back off instead of polling it;
    * a 429: the mailbox is throttled, and its ``Retry-After`` is obeyed by parking;
    * ``MAX_LOOKUP_FAILURES_IN_A_ROW`` failures in a row, or one with no time left to poll again.

    Otherwise a failed poll in a window that has answered before is passed over. Restarting the
    whole window on every stray 503 would let a 5 % error rate, over a 60 s window of 30 polls,
    dead-letter most emails whose send outcome is unknown.
    """
    settings = ctx.settings
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.graph_sent_lookup_deadline_s
    answered = False
    failures_in_a_row = 0
    while True:
        try:
            found = await mailer.find_by_correlation(email.mailbox, email.correlation_key, "SentItems")
        except GraphUnavailable as exc:
            failures_in_a_row += 1
            if (
                not answered
                or exc.status_code == 429
                or failures_in_a_row >= MAX_LOOKUP_FAILURES_IN_A_ROW
                or loop.time() + settings.graph_sent_lookup_interval_s >= deadline
            ):
                raise
            log.info("Sent Items look-up failed; polling on", email_id=str(email.id), reason=exc.reason)
            await asyncio.sleep(settings.graph_sent_lookup_interval_s)
            continue
        answered, failures_in_a_row = True, 0
        if found is not None or loop.time() >= deadline:
            return found
        await asyncio.sleep(settings.graph_sent_lookup_interval_s)


async def _record_sent(
    ctx: AppContext, email: IncomingEmail, *, method: str, recovered: bool, internet_message_id: str | None
) -> None:
    now = utcnow()
    async with store_errors("mark sent"), ctx.statement_sessions.begin() as session:
        await sending.mark_sent(
            session,
            email,
            method=method,
            recovered=recovered,
            internet_message_id=internet_message_id,
            now=now,
            backup_at=now + timedelta(seconds=ctx.settings.backup_delay_s),
        )
    note_stage(ctx, "received_to_sent", email.created_at, now)
    await ctx.bus.lifecycle(
        "sent", email.publisher_message_id, email.id, now, attempt=email.attempt_count, recovered=recovered
    )


async def _send_started(ctx: AppContext, email: IncomingEmail, attempt: int) -> bool:
    async with store_errors("send started"), ctx.statement_sessions.begin() as session:
        return await sending.set_send_started(session, email.id, attempt, utcnow())


@dataclass
class SendAttempt:
    """What one attempt knows about whether the email may already have been sent."""

    #: True while a send may have happened that nobody has ruled out: set by an earlier try's
    #: ``send_started_at`` or a resumed attempt, cleared by an unsuccessful Sent Items look-up,
    #: set again just before our own send call, cleared if that call definitely failed.
    outcome_unknown: bool
    #: True while the committed ``send_started_at`` was written for this attempt by its take and
    #: nothing has happened since that could make the attempt stale (a Sent Items check can
    #: take a minute): the send may then go without another write first.
    start_recorded: bool = False
    #: The step running, whose retry policy applies to a failure: attachments are "upload"
    #: (draft and upload sessions), except a failed download, which is "download".
    step: RetryStep = "send"


async def _send(ctx: AppContext, mailer: GraphMailer, email: IncomingEmail, attempt: int, state: SendAttempt) -> None:
    """Steps 2-5 of the module docstring for one taken email."""
    if state.outcome_unknown:
        found = await find_sent_copy(ctx, mailer, email)
        if found is not None:
            log.info("send already happened; recording it", email_id=str(email.id))
            await _record_sent(
                ctx, email, method="recovered", recovered=True, internet_message_id=found.internet_message_id
            )
            return
        state.outcome_unknown = False
        state.start_recorded = False
    message = outgoing_message(email)
    draft_id = None
    if email.route == Route.ATTACHMENT:
        state.step = "upload"
        draft_id = await attach_all(ctx, mailer, email, attempt, message)
        state.step = "send"
    if not state.start_recorded and not await _send_started(ctx, email, attempt):
        return
    state.outcome_unknown = True
    try:
        if draft_id is None:
            await mailer.send_mail(email.mailbox, message)
        else:
            await mailer.send_draft(email.mailbox, draft_id)
    except SendOutcomeUnknown:
        raise
    except MailpipeError:
        state.outcome_unknown = False  # Graph refused or throttled the call: nothing was sent
        raise
    await _record_sent(
        ctx,
        email,
        method="sendMail" if draft_id is None else "draft",
        recovered=False,
        internet_message_id=None,
    )


async def _fail(ctx: AppContext, email: IncomingEmail, attempt: int, error: MailpipeError, state: SendAttempt) -> None:
    """Park the email for a retry or dead-letter it, as :func:`pipeline.outcome.decide` says."""
    settings = ctx.settings
    step: RetryStep = "download" if isinstance(error, AttachmentUnavailable) else state.step
    decision = decide(error, attempt=attempt, policy=retry_policy(settings, step))
    if decision.action == Action.PARK:
        async with store_errors("park"), ctx.sessions.begin() as session:
            await sending.park(
                session,
                email,
                status=EmailStatus.RETRY_WAIT,
                attempt=attempt,
                delay_s=decision.delay_s,
                error=str(error),
                reason=decision.reason,
                # An unresolved "maybe sent" survives any later failure (a 503 on the look-up
                # itself must not turn it into "not sent").
                keep_send_started=state.outcome_unknown or isinstance(error, SendOutcomeUnknown),
                now=utcnow(),
            )
        note_retry(ctx, f"send:{email.route}", decision.reason)
        log.warning(
            "send failed; parked for retry",
            email_id=str(email.id),
            reason=decision.reason,
            delay_s=round(decision.delay_s, 2),
            attempt=attempt,
        )
        return
    note_dead_letter(ctx, f"send:{email.route}", decision.reason)
    error_text = str(error)
    if state.outcome_unknown and not isinstance(error, SendOutcomeUnknown):
        # The last error is not the send's own (a 429 on the Sent Items look-up after a 504), but
        # that send's outcome is still unknown: the dead letter must not read as "never sent".
        error_text += " (an earlier send call's outcome is unknown: the email may have been sent)"
    await dead_letter(
        ctx.bus,
        ctx.sessions,
        DeadLetterNote(
            reason=decision.reason,
            error=error_text,
            step=f"send:{email.route}",
            attempts=attempt,
            email_id=email.id,
            publisher_message_id=email.publisher_message_id,
            mailbox=email.mailbox,
            original_exchange=DISPATCH.name,
            original_routing_key=email.route,
        ),
        _payload_bytes(email),
        message_id=f"dead:{email.id}:{attempt}",
    )


def _payload_bytes(email: IncomingEmail) -> bytes:
    import json  # noqa: PLC0415 - only on the dead-letter path

    return json.dumps(email.payload).encode()


async def process_dispatch(ctx: AppContext, dispatch: Dispatch, pool: str) -> str:
    """Do the work of one dispatch; returns what happened (for logs and tests)."""
    mailer = ctx.require_mailer()
    async with store_errors("take"), ctx.statement_sessions.begin() as session:
        taken = await take(
            session, dispatch.incoming_email_id, dispatch.attempt, pool=pool, worker=ctx.worker_name, now=utcnow()
        )
    if taken is None:
        return "stale"
    email = taken.email
    await ctx.bus.lifecycle(
        "taken", email.publisher_message_id, email.id, utcnow(), attempt=dispatch.attempt, pool=pool
    )
    state = SendAttempt(outcome_unknown=taken.started_before or taken.resumed, start_recorded=taken.start_recorded)
    try:
        await _send(ctx, mailer, email, dispatch.attempt, state)
    except (StoreUnavailable, BrokerUnavailable):
        raise  # infrastructure: settle() requeues, the redelivery resumes this attempt
    except MailpipeError as exc:
        await _fail(ctx, email, dispatch.attempt, exc, state)
        return "failed"
    return "sent"


async def handle_dispatch(ctx: AppContext, message: RabbitMessage) -> None:
    """Consumer edge for both send pools."""
    body: bytes = message.body
    pool = message.raw_message.routing_key or "unknown"

    async def work() -> str:
        try:
            dispatch = Dispatch.model_validate_json(body)
        except ValidationError as exc:
            raise InvalidMessage(f"dispatch is invalid: {exc}", reason="schema") from exc
        bind_ids(incoming_email_id=dispatch.incoming_email_id, publisher_message_id=dispatch.publisher_message_id)
        outcome = await process_dispatch(ctx, dispatch, pool)
        log.debug("dispatch handled", outcome=outcome, email_id=str(dispatch.incoming_email_id))
        return outcome

    to_dead_letter = delivery_dead_letterer(
        ctx.bus, ctx.sessions, message, step=f"send:{pool}", exchange=DISPATCH.name, routing_key=pool
    )

    await observed_settle(ctx, f"send:{pool}", message, work, to_dead_letter)
