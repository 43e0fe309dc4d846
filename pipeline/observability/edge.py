"""Observability at the consumer edge and the one-line notes steps make.

:func:`observed_settle` replaces :func:`pipeline.outcome.settle` in every ``handle_*`` function.
For the whole handling of one delivery it

* binds structlog context variables: ``step``, ``message_id``, ``correlation_id`` and (when
  tracing) ``trace_id``; steps add ``publisher_message_id``, ``incoming_email_id`` and
  ``graph_message_id`` with :func:`bind_ids` as soon as they know them. Everything bound is
  unbound when the delivery is settled, so nothing leaks into the next message;
* observes ``mailpipe_step_duration_seconds{step}`` and counts
  ``mailpipe_step_outcomes_total{step,outcome,reason}``: the string the work returned ("sent",
  "stale", ...), or ``requeued`` / ``dead-lettered`` / ``error`` / ``interrupted`` with the
  error's reason, mirroring what :func:`~pipeline.outcome.settle` does with the message;
* counts requeues in ``mailpipe_retries_total`` and dead letters in
  ``mailpipe_dead_letters_total``.

The ``note_*`` functions are for steps: each does nothing when the app has no metrics.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any

import structlog
from faststream.rabbit import RabbitMessage
from sqlalchemy.exc import SQLAlchemyError

from pipeline.context import AppContext
from pipeline.errors import MailpipeError, PermanentError, TransientError
from pipeline.observability.metrics import Metrics
from pipeline.observability.tracing import current_trace_id
from pipeline.outcome import DeadLetterer, settle

__all__ = [
    "bind_ids",
    "continue_trace",
    "delivery_scope",
    "note_backup",
    "note_dead_letter",
    "note_dispatched",
    "note_retry",
    "note_stage",
    "observed_settle",
    "trace_parents",
]

log = structlog.get_logger(__name__)

Work = Callable[[], Awaitable[Any]]


def bind_ids(**ids: object) -> None:
    """Bind identifiers (``incoming_email_id=...``) to every log line of the current delivery."""
    structlog.contextvars.bind_contextvars(**{k: str(v) for k, v in ids.items() if v is not None})


def _reason(error: BaseException) -> str:
    return error.reason if isinstance(error, MailpipeError) else "unexpected-error"


class Delivery:
    """The outcome of one delivery, filled in while it is handled."""

    def __init__(self, metrics: Metrics | None, step: str) -> None:
        self.metrics = metrics
        self.step = step
        self.outcome = "done"
        self.reason = ""

    def track(self, work: Work) -> Callable[[], Awaitable[None]]:
        async def tracked() -> None:
            try:
                result = await work()
            except PermanentError as exc:
                self.outcome, self.reason = "dead-lettered", exc.reason
                raise
            except TransientError as exc:
                self.outcome, self.reason = "requeued", exc.reason
                if self.metrics is not None:
                    self.metrics.retry(self.step, exc.reason)
                raise
            except Exception:
                self.outcome, self.reason = "error", "unexpected-error"
                raise
            if isinstance(result, str):
                self.outcome = result

        return tracked

    def track_dead_letter(self, dead_letter: DeadLetterer) -> DeadLetterer:
        async def tracked(error: MailpipeError | Exception) -> None:
            if self.metrics is not None:
                self.metrics.dead_letter(self.step, _reason(error))
            await dead_letter(error)

        return tracked


@contextmanager
def delivery_scope(ctx: AppContext, step: str, message: RabbitMessage) -> Iterator[Delivery]:
    """Log context, duration and outcome of one delivery (see the module docstring)."""
    saved = structlog.contextvars.get_contextvars()
    bind_ids(
        step=step,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        trace_id=current_trace_id(),
    )
    delivery = Delivery(ctx.metrics, step)
    started = time.perf_counter()
    try:
        yield delivery
    except asyncio.CancelledError:
        delivery.outcome, delivery.reason = "interrupted", "shutdown"
        raise
    finally:
        if ctx.metrics is not None:
            ctx.metrics.observe_step(step, time.perf_counter() - started)
            ctx.metrics.step_outcome(step, delivery.outcome, delivery.reason)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**saved)


async def observed_settle(
    ctx: AppContext, step: str, message: RabbitMessage, work: Work, dead_letter: DeadLetterer
) -> None:
    """:func:`~pipeline.outcome.settle` inside :func:`delivery_scope`; ``work`` may return its outcome."""
    with delivery_scope(ctx, step, message) as delivery:
        await settle(message, delivery.track(work), delivery.track_dead_letter(dead_letter))


def note_retry(ctx: AppContext, step: str, reason: str) -> None:
    """An email parked for a later attempt."""
    if ctx.metrics is not None:
        ctx.metrics.retry(step, reason)


def note_dead_letter(ctx: AppContext, step: str, reason: str) -> None:
    """An email dead-lettered by a step (not through :func:`observed_settle`)."""
    if ctx.metrics is not None:
        ctx.metrics.dead_letter(step, reason)


def note_stage(ctx: AppContext, stage: str, since: datetime, until: datetime | None = None) -> None:
    """``mailpipe_end_to_end_seconds{stage}``: time from ``since`` to ``until`` (default now)."""
    if ctx.metrics is not None:
        ctx.metrics.stage(stage, since, until)


def note_dispatched(ctx: AppContext, routes: Iterable[str]) -> None:
    """Dispatches the scheduler published, one route per dispatch."""
    if ctx.metrics is not None:
        ctx.metrics.dispatches(routes)


def note_backup(ctx: AppContext, outcome: str) -> None:
    """A backup's outcome; ``failed`` is counted where the backup is dead-lettered, not here
    (a backup that failed and was parked will be tried again)."""
    if ctx.metrics is not None and outcome != "failed":
        ctx.metrics.backup(outcome)


async def trace_parents(ctx: AppContext, email_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The traceparent ingest recorded per email (empty, and no query, when tracing is off)."""
    if ctx.tracing is None or not email_ids:
        return {}
    try:
        return await ctx.tracing.received_traceparents(ctx.sessions, email_ids)
    except (SQLAlchemyError, OSError) as exc:  # tracing must never hold up a dispatch
        log.warning("trace context lookup failed; dispatching without it", error=type(exc).__name__)
        return {}


def continue_trace(
    ctx: AppContext, traceparent: str | None, name: str, **attributes: Any
) -> AbstractContextManager[object]:
    """A span continuing ``traceparent`` for work done outside any delivery (the scheduler's loop)."""
    if ctx.tracing is None:
        return nullcontext()
    return ctx.tracing.continued(traceparent, name, **attributes)
