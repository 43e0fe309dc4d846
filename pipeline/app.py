"""``create_app(settings, roles)``: the one place where mailpipe is wired together.

Each role is a set of consumers (and, for the scheduler, background loops). ``mailpipe run``
starts all roles in one process; ``--role`` picks some, so each can be its own Deployment.
Every consumer uses manual acks (decided in :mod:`pipeline.outcome`) and its own channel whose
prefetch count is its concurrency limit: FastStream's RabbitMQ subscribers have no
``max_workers``, and an unset prefetch would pull the whole queue into memory.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.annotations import RabbitMessage

from pipeline.context import AppContext
from pipeline.db.engine import create_engine, create_sessionmaker, create_statement_sessionmaker
from pipeline.lifecycle import RoleServices
from pipeline.messaging import Bus, create_broker
from pipeline.observability.wiring import instrument_broker
from pipeline.settings import ROLES, Role, Settings
from pipeline.steps import backup, ingest, scheduler, send
from pipeline.topology import (
    ATTACHMENT_QUEUE,
    BACKUP_QUEUE,
    CANCEL_QUEUE,
    COMMANDS,
    DISPATCH,
    INGEST_QUEUE,
    NO_ATTACHMENT_QUEUE,
    WAKE_QUEUE,
    rabbit_exchange,
    rabbit_queue,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["build_context", "create_app"]


async def the_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """Hand handlers the delivery itself, body undecoded: validation is the step's job, so that a
    body which is not even JSON is dead-lettered with a reason instead of failing in FastStream.

    With the broker's ``apply_types=False`` (:func:`pipeline.messaging.create_broker`) FastStream
    passes this value straight to the handler, without dependency injection.
    """
    return message


def build_context(
    settings: Settings, broker: RabbitBroker | None = None, *, tracer_provider: TracerProvider | None = None
) -> AppContext:
    """The clients every role shares; nothing connects until the app starts."""
    broker = broker or create_broker(settings)
    metrics, tracing = instrument_broker(settings, broker, tracer_provider)
    engine = create_engine(settings)
    return AppContext(
        settings=settings,
        broker=broker,
        engine=engine,
        sessions=create_sessionmaker(engine),
        statement_sessions=create_statement_sessionmaker(engine),
        bus=Bus(broker),
        worker_name=f"{socket.gethostname()}:{os.getpid()}",
        metrics=metrics,
        tracing=tracing,
    )


def create_app(
    settings: Settings, roles: Iterable[Role] = ROLES, *, tracer_provider: TracerProvider | None = None
) -> tuple[FastStream, AppContext]:
    """Build the FastStream application running ``roles``, and the context it is wired with.

    ``tracer_provider`` (tests) traces with it instead of what ``MAILPIPE_OTLP_ENDPOINT`` says.
    """
    chosen = tuple(dict.fromkeys(roles))
    unknown = [r for r in chosen if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown role(s) {unknown}; choose from {', '.join(ROLES)}")
    ctx = build_context(settings, tracer_provider=tracer_provider)
    broker = ctx.broker

    def channel(prefetch: int) -> Channel:
        return Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True)

    if "ingest" in chosen:

        @broker.subscriber(
            rabbit_queue(INGEST_QUEUE, "send-email"),
            rabbit_exchange(COMMANDS),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=the_message,
            channel=channel(settings.ingest_prefetch),
        )
        async def on_send_email(message: RabbitMessage) -> None:
            await ingest.handle_send_email(ctx, message)

    if "scheduler" in chosen:

        @broker.subscriber(
            rabbit_queue(CANCEL_QUEUE, "cancel-email"),
            rabbit_exchange(COMMANDS),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=the_message,
            channel=channel(16),
        )
        async def on_cancel_email(message: RabbitMessage) -> None:
            await scheduler.handle_cancel_email(ctx, message)

        @broker.subscriber(
            rabbit_queue(WAKE_QUEUE),
            # Consumed without acks: a wake-up is a hint (a lost one costs a poll interval), and
            # there are two per email, so acking each would be a frame per hint for nothing.
            ack_policy=AckPolicy.ACK_FIRST,
            no_reply=True,
            decoder=the_message,
            channel=channel(64),
        )
        async def on_wake(message: RabbitMessage) -> None:
            await scheduler.handle_wake(ctx, message)

    if "send-no-attachments" in chosen:

        @broker.subscriber(
            rabbit_queue(NO_ATTACHMENT_QUEUE, "no-attachment"),
            rabbit_exchange(DISPATCH),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=the_message,
            channel=channel(settings.send_no_attachments_prefetch),
        )
        async def on_dispatch_no_attachment(message: RabbitMessage) -> None:
            await send.handle_dispatch(ctx, message)

    if "send-attachments" in chosen:

        @broker.subscriber(
            rabbit_queue(ATTACHMENT_QUEUE, "attachment"),
            rabbit_exchange(DISPATCH),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=the_message,
            channel=channel(settings.send_attachments_prefetch),
        )
        async def on_dispatch_attachment(message: RabbitMessage) -> None:
            await send.handle_dispatch(ctx, message)

    if "backup" in chosen:

        @broker.subscriber(
            rabbit_queue(BACKUP_QUEUE, "backup"),
            rabbit_exchange(DISPATCH),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=the_message,
            channel=channel(settings.backup_prefetch),
        )
        async def on_backup(message: RabbitMessage) -> None:
            await backup.handle_backup(ctx, message)

    services = RoleServices(ctx, chosen)
    app = FastStream(broker, on_startup=[services.before_start], after_startup=[services.after_start])
    app.on_shutdown(services.stop)
    app.after_shutdown(services.close)
    return app, ctx
