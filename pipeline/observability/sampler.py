"""The gauges that describe the whole system, sampled from the database and the broker.

:class:`Sampler` runs in the scheduler role only (every ``SAMPLE_EVERY_POLLS`` scheduler polls,
5 s by default): the numbers are the same whichever pod reads them, and N worker pods querying
the database every few seconds would only add load. Each round is three cheap queries (one
``GROUP BY route, status`` on the ``(route, status)`` index, one ``MIN`` on the due index, one
``COUNT`` on ``dlq``) and one passive queue declare per queue, on a connection and a channel of
its own that every round reuses. A failed round is logged and the previous values stay; the next
round tries again (on a new channel, if the broker closed the old one).

Why one channel and not one per round: aio-pika 10.2 leaves a closed channel's close callback
(an event, a lock and a task, about 3.5 KB) attached to the connection for the connection's
life. At a round every 5 s that was 2.5 MB an hour of the scheduler's memory, found with
``python -m bench throughput --trace-memory scheduler`` (``bench/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import AMQPError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from pipeline.context import AppContext
from pipeline.db.errors import store_errors
from pipeline.db.models import DeadLetter, EmailStatus, IncomingEmail, Route
from pipeline.db.schedule import DUE, IN_FLIGHT
from pipeline.db.types import utcnow
from pipeline.errors import StoreUnavailable
from pipeline.observability.metrics import Metrics
from pipeline.topology import QUEUES

__all__ = ["SAMPLE_EVERY_POLLS", "Sampler"]

log = structlog.get_logger(__name__)

SAMPLE_EVERY_POLLS = 5


class Sampler:
    """Sets the database and queue gauges of ``metrics`` every ``interval_s`` seconds."""

    def __init__(self, ctx: AppContext, metrics: Metrics, *, interval_s: float | None = None) -> None:
        self._ctx = ctx
        self._metrics = metrics
        self._interval_s = interval_s or SAMPLE_EVERY_POLLS * ctx.settings.scheduler_poll_interval_s
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    async def run_forever(self) -> None:
        while True:
            await self.sample_once()
            await asyncio.sleep(self._interval_s)

    async def sample_once(self) -> None:
        """One round; errors are logged, never raised (a sampler must not stop a role)."""
        try:
            # store_errors: a connection refused at connect time is an OSError, not a SQLAlchemyError.
            async with store_errors("metrics sampling"):
                await self.sample_database()
        except (StoreUnavailable, SQLAlchemyError) as exc:
            log.warning("metrics sampling: database unavailable", error=str(exc))
        try:
            await self.sample_queues()
        except (AMQPError, OSError, TimeoutError) as exc:
            log.warning("metrics sampling: broker unavailable", error=type(exc).__name__)

    async def sample_database(self) -> None:
        settings, m = self._ctx.settings, self._metrics
        caps = {
            Route.NO_ATTACHMENT: settings.max_in_flight_no_attachments,
            Route.ATTACHMENT: settings.max_in_flight_attachments,
        }
        now = utcnow()
        async with self._ctx.sessions() as session:
            rows = (
                await session.execute(
                    select(IncomingEmail.route, IncomingEmail.status, func.count()).group_by(
                        IncomingEmail.route, IncomingEmail.status
                    )
                )
            ).all()
            oldest = await session.scalar(
                select(func.min(IncomingEmail.next_attempt_at)).where(
                    IncomingEmail.status.in_(DUE), IncomingEmail.next_attempt_at <= now
                )
            )
            dlq = await session.scalar(
                select(func.count()).select_from(DeadLetter).where(DeadLetter.purged_at.is_(None))
            )
        by_status = dict.fromkeys(EmailStatus, 0)
        in_flight = dict.fromkeys(caps, 0)
        for route, status, n in rows:
            by_status[status] = by_status.get(status, 0) + n
            if route in in_flight and status in IN_FLIGHT:
                in_flight[route] += n
        for status, n in by_status.items():
            m.emails.labels(status=str(status)).set(n)
        for route, cap in caps.items():
            m.in_flight.labels(pool=str(route)).set(in_flight[route])
            m.in_flight_cap.labels(pool=str(route)).set(cap)
        m.backlog_oldest_age.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        m.dlq_size.set(int(dlq or 0))

    async def sample_queues(self) -> None:
        channel = await self._open_channel()
        for queue in QUEUES:
            # A passive declare of a missing queue closes the channel (the next round opens
            # another); the topology is declared at start, so only a deleted queue does that.
            declared = await channel.declare_queue(queue.name, passive=True, timeout=10)
            count = declared.declaration_result.message_count
            self._metrics.queue_depth.labels(queue=queue.name).set(count or 0)

    async def _open_channel(self) -> AbstractChannel:
        # A plain connection, reopened here when lost: a robust channel answers a repeated
        # passive declare from its own cache, so every round would report the first count.
        if self._connection is None or self._connection.is_closed:
            self._connection = await aio_pika.connect(self._ctx.settings.amqp_url, timeout=10)
            self._channel = None
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    async def aclose(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(AMQPError, OSError):
                await self._connection.close()
            self._connection = None
            self._channel = None
