"""The one place that decides what happens to a delivery: ack, requeue or dead-letter.

Every consumer runs under ``AckPolicy.MANUAL`` and hands its work to :func:`settle`:

=====================  ==================================================================
work ended with         what happens to the RabbitMQ message
=====================  ==================================================================
success                 ack
PermanentError          dead-lettered with a readable reason (``DeadLetterer``), then ack
TransientError          infrastructure is away: wait a little, then nack(requeue=True)
any other exception     a bug: requeue, and dead-letter once the delivery count nears the
                        queue's ``x-delivery-limit`` so the reason is kept in words
CancelledError          shutdown: nothing; the broker requeues when the channel closes
=====================  ==================================================================

Email-level retries (Graph said 429, a download failed) never come here as errors: the steps
park the email in the database and the scheduler re-dispatches it when due, so the message is
acked and no prefetch slot is held while waiting. :func:`decide` is the pure rule they use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog

from pipeline.errors import MailpipeError, PermanentError, TransientError
from pipeline.retry import RetryPolicy
from pipeline.topology import DELIVERY_LIMIT

__all__ = ["Action", "DeadLetterer", "Decision", "decide", "delivery_count", "settle"]

log = structlog.get_logger(__name__)


class Action(StrEnum):
    DONE = "done"
    PARK = "park"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float = 0.0
    reason: str = ""


def decide(error: BaseException | None, *, attempt: int, policy: RetryPolicy) -> Decision:
    """What to do with an email whose attempt number ``attempt`` ended with ``error``."""
    if error is None:
        return Decision(Action.DONE)
    reason = error.reason if isinstance(error, MailpipeError) else "unexpected-error"
    if isinstance(error, PermanentError):
        return Decision(Action.DEAD_LETTER, reason=reason)
    if policy.exhausted(attempt):
        return Decision(Action.DEAD_LETTER, reason=f"attempts-exhausted:{reason}")
    retry_after = error.retry_after_s if isinstance(error, TransientError) else None
    return Decision(Action.PARK, delay_s=policy.delay_s(attempt, retry_after), reason=reason)


class AckableMessage(Protocol):
    headers: dict[str, Any]

    async def ack(self) -> None: ...

    async def nack(self, *, requeue: bool = True) -> None: ...


DeadLetterer = Callable[[MailpipeError | Exception], Awaitable[None]]


def delivery_count(message: AckableMessage) -> int:
    """How many times a quorum queue delivered this message before (0 on first delivery)."""
    value = (message.headers or {}).get("x-delivery-count", 0)
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else 0


def _requeue_delay_s(count: int) -> float:
    return float(min(30.0, 0.5 * 2**count))


async def settle(message: AckableMessage, work: Callable[[], Awaitable[None]], dead_letter: DeadLetterer) -> None:
    """Run ``work`` for ``message`` and ack, requeue or dead-letter it (see the module table)."""
    count = delivery_count(message)
    try:
        await work()
    except PermanentError as exc:
        await dead_letter(exc)
    except TransientError as exc:
        log.warning("transient failure; requeueing", reason=exc.reason, error=str(exc), deliveries=count)
        await asyncio.sleep(_requeue_delay_s(count))
        await message.nack(requeue=True)
        return
    except Exception as exc:  # a bug in mailpipe: keep the message, then keep its story
        if count + 1 >= DELIVERY_LIMIT:
            log.exception("unexpected error; dead-lettering after repeated deliveries", deliveries=count)
            await dead_letter(exc)
        else:
            log.exception("unexpected error; requeueing", deliveries=count)
            await asyncio.sleep(_requeue_delay_s(count))
            await message.nack(requeue=True)
            return
    await message.ack()
