"""Scheduler: turns due rows into dispatches, under each pool's in-flight cap.

It wakes on ``email.received`` (something new may be due) and ``email.sent`` (a pool's
in-flight slot was freed) events, and also polls every ``scheduler_poll_interval_s``, so an
email committed just before a crash (whose wake-up was lost), a retry whose time has come and
a slot freed by a failure are still dispatched. On PostgreSQL each route's claim is one
statement (:func:`pipeline.db.schedule.claim_due`). Crash analysis: a dispatch is committed before it is published; if
the process dies in between, the sweeper (:func:`pipeline.db.schedule.claim_stuck`) publishes
it again after ``dispatch_timeout_s`` with a new attempt number. A duplicate dispatch message
is harmless: the worker drops any dispatch whose attempt is not the email's current one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog
from faststream.rabbit import RabbitMessage
from pydantic import ValidationError

from pipeline.context import AppContext
from pipeline.db import schedule
from pipeline.db.errors import store_errors
from pipeline.db.models import Route
from pipeline.db.types import utcnow
from pipeline.deadletter import delivery_dead_letterer
from pipeline.errors import InvalidMessage, TransientError
from pipeline.messages import BackupRequest, CancelEmail, Dispatch
from pipeline.observability.edge import continue_trace, note_dispatched, observed_settle, trace_parents
from pipeline.topology import COMMANDS, DISPATCH

__all__ = ["Scheduler", "handle_cancel_email", "handle_wake", "publish_claims"]

log = structlog.get_logger(__name__)


async def publish_claims(ctx: AppContext, claims: Sequence[schedule.Claimed]) -> None:
    """Publish one dispatch per claim, with their confirms in flight together.

    With tracing on, each dispatch continues the trace its email's ingest started.
    """
    parents = await trace_parents(ctx, [claim.id for claim in claims])

    async def one(claim: schedule.Claimed) -> None:
        message: Dispatch | BackupRequest
        if claim.route == Route.BACKUP:
            message = BackupRequest(
                incoming_email_id=claim.id,
                publisher_message_id=claim.publisher_message_id,
                attempt=claim.attempt,
            )
        else:
            message = Dispatch(
                incoming_email_id=claim.id,
                publisher_message_id=claim.publisher_message_id,
                route=claim.route,
                attempt=claim.attempt,
            )
        with continue_trace(ctx, parents.get(claim.id), "dispatch", route=claim.route):
            await ctx.bus.publish(
                message,
                exchange=DISPATCH.name,
                routing_key=claim.route,
                message_id=f"{claim.route}:{claim.id}:{claim.attempt}",
                correlation_id=claim.publisher_message_id,
            )
        if claim.route != Route.BACKUP:
            await ctx.bus.lifecycle(
                "dispatched",
                claim.publisher_message_id,
                claim.id,
                utcnow(),
                route=claim.route,
                attempt=claim.attempt,
            )

    await asyncio.gather(*(one(claim) for claim in claims))
    note_dispatched(ctx, (claim.route for claim in claims))


class Scheduler:
    """The scheduler role's background loop; one per process, any number of replicas."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._wake = asyncio.Event()
        self._last_sweep = 0.0
        self._last_backup_round = 0.0

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        settings = self._ctx.settings
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=settings.scheduler_poll_interval_s)
                # Woken: let the rest of a burst of wake-ups arrive, then serve them in one round.
                await asyncio.sleep(settings.scheduler_wake_coalesce_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.run_once()
            except TransientError as exc:
                log.warning("scheduler round failed; will retry", reason=exc.reason, error=str(exc))
            except Exception:
                # A bug or an error nobody translated must not end dispatching while the process
                # still looks healthy: log it loudly and try again next round (the database
                # state is consistent, each round is one transaction per route).
                log.exception("scheduler round failed unexpectedly; will retry")

    async def run_once(self) -> int:
        """One round: dispatch what is due (repeatedly, while batches fill), sweep when it is time."""
        total = 0
        while True:
            claimed = await self._dispatch_round()
            total += claimed
            if claimed < self._ctx.settings.scheduler_batch_size:
                break
        if time.monotonic() - self._last_sweep >= self._ctx.settings.sweep_interval_s:
            self._last_sweep = time.monotonic()
            total += await self.sweep()
        return total

    async def _dispatch_round(self) -> int:
        settings = self._ctx.settings
        caps = {
            Route.NO_ATTACHMENT: settings.max_in_flight_no_attachments,
            Route.ATTACHMENT: settings.max_in_flight_attachments,
        }
        count = 0
        for route, cap in caps.items():
            async with store_errors("dispatch"), self._ctx.statement_sessions.begin() as session:
                claims = await schedule.claim_due(session, route, cap, settings.scheduler_batch_size, utcnow())
            await publish_claims(self._ctx, claims)
            count = max(count, len(claims))
        # Backups become due by the clock (backup_delay_s after the send), not by a wake-up, so
        # they are claimed at the poll cadence rather than on every wake-up round.
        if time.monotonic() - self._last_backup_round < settings.scheduler_poll_interval_s:
            return count
        self._last_backup_round = time.monotonic()
        async with store_errors("dispatch backups"), self._ctx.sessions.begin() as session:
            backups = await schedule.claim_due_backups(session, settings.scheduler_batch_size, utcnow())
        await publish_claims(self._ctx, backups)
        if len(backups) >= settings.scheduler_batch_size:
            self._last_backup_round = 0.0  # a full batch: more are due, claim again next round
        return max(count, len(backups))

    async def sweep(self) -> int:
        settings = self._ctx.settings
        async with store_errors("sweep"), self._ctx.sessions.begin() as session:
            claims = await schedule.claim_stuck(
                session,
                dispatch_timeout_s=settings.dispatch_timeout_s,
                stuck_timeout_s=settings.stuck_timeout_s,
                batch=settings.scheduler_batch_size,
                now=utcnow(),
            )
        if claims:
            log.warning("re-dispatching stuck emails", count=len(claims))
        await publish_claims(self._ctx, claims)
        return len(claims)


async def handle_wake(ctx: AppContext, message: RabbitMessage) -> None:
    """A wake-up hint; losing one costs one poll interval, so it is consumed without an ack."""
    scheduler = ctx.scheduler
    if scheduler is not None:
        scheduler.wake()


async def cancel_email(ctx: AppContext, body: bytes) -> str:
    """Cancel the email named by a CancelEmail body; returns the outcome word."""
    try:
        command = CancelEmail.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidMessage(f"CancelEmail is invalid: {exc.errors()[0]['msg']}", reason="schema") from exc
    now = utcnow()
    async with store_errors("cancel"), ctx.sessions.begin() as session:
        email_id, outcome = await schedule.cancel(session, command.publisher_message_id, now)
    if email_id is not None:
        event = "cancelled" if outcome == "cancelled" else "cancel-refused"
        await ctx.bus.lifecycle(event, command.publisher_message_id, email_id, now, outcome=outcome)
    return outcome


async def handle_cancel_email(ctx: AppContext, message: RabbitMessage) -> None:
    body: bytes = message.body

    async def work() -> str:
        outcome = await cancel_email(ctx, body)
        log.info("cancel-email handled", outcome=outcome)
        return outcome

    to_dead_letter = delivery_dead_letterer(
        ctx.bus, ctx.sessions, message, step="cancel", exchange=COMMANDS.name, routing_key="cancel-email"
    )

    await observed_settle(ctx, "cancel", message, work, to_dead_letter)
