"""The broker factory and the one place mailpipe publishes from.

FastStream's defaults are wrong for a service that must not lose mail, so every publish goes
through :class:`Bus`: persistent delivery mode, ``mandatory`` with returns raised as errors
(an unroutable message is a bug, not a silent drop), publisher confirms awaited, a stable
``message_id`` the receiver can de-duplicate on, and JSON bodies from the pydantic models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError
from faststream.rabbit import Channel, RabbitBroker
from pydantic import BaseModel

from pipeline.errors import BrokerUnavailable
from pipeline.messages import EmailLifecycleEvent
from pipeline.settings import Settings
from pipeline.topology import BINDINGS, EVENTS, EXCHANGES, QUEUES

__all__ = ["PUBLISH_TIMEOUT_S", "Bus", "create_broker", "declare_topology"]

PUBLISH_TIMEOUT_S = 30.0


def create_broker(settings: Settings) -> RabbitBroker:
    """A broker whose default (publishing) channel waits for confirms and raises on returns.

    ``apply_types=False``: handlers take the delivery (see :func:`pipeline.app.the_message`)
    and convert it themselves. FastStream's dependency injection would otherwise resolve the
    ``RabbitMessage`` parameter in a worker thread and an anyio task group for every message:
    a thread hop per delivery, about a tenth of a role's CPU.
    """
    return RabbitBroker(
        settings.amqp_url,
        apply_types=False,
        default_channel=Channel(publisher_confirms=True, on_return_raises=True),
        graceful_timeout=settings.graceful_timeout_s,
        logger=None,
    )


async def declare_topology(amqp_url: str) -> None:
    """Declare every exchange, queue and binding; idempotent, run by every role at start.

    It uses a short-lived connection of its own, not the broker's: FastStream caches declared
    queues by name, and a queue first declared on the broker's default channel would then be
    consumed there too, without the subscriber's own channel and its prefetch limit.
    """
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchanges = {
            e.name: await channel.declare_exchange(e.name, aio_pika.ExchangeType(e.type), durable=True)
            for e in EXCHANGES
        }
        queues = {
            q.name: await channel.declare_queue(q.name, durable=True, arguments={"x-queue-type": q.type, **q.arguments})
            for q in QUEUES
        }
        for binding in BINDINGS:
            await queues[binding.queue].bind(exchanges[binding.exchange], routing_key=binding.routing_key)


class Bus:
    """Publishes mailpipe's messages with the guarantees described in the module docstring."""

    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker

    async def publish(
        self,
        message: BaseModel | bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        content_type: str = "application/json",
        mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm; raise :class:`BrokerUnavailable` otherwise.

        ``mandatory`` (the default) makes an unroutable message an error. Broadcasts whose
        listeners are optional (lifecycle events, replies to a publisher that may be gone) pass
        ``mandatory=False``.
        """
        body = message.model_dump_json(by_alias=True).encode() if isinstance(message, BaseModel) else message
        try:
            await self._broker.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                persist=True,
                mandatory=mandatory,
                message_id=message_id,
                correlation_id=correlation_id or message_id,
                headers=headers,
                content_type=content_type,
                timeout=PUBLISH_TIMEOUT_S,
            )
        except (PublishError, DeliveryError) as exc:
            raise BrokerUnavailable(f"broker did not accept the message for {exchange}/{routing_key}: {exc}") from exc
        except (AMQPError, ConnectionError, TimeoutError) as exc:
            raise BrokerUnavailable(f"publishing to {exchange}/{routing_key} failed: {exc!r}") from exc

    async def reply(self, message: BaseModel, *, reply_to: str, message_id: str, correlation_id: str) -> None:
        """Publish to a publisher's ``reply_to`` queue through the default exchange."""
        await self.publish(
            message,
            exchange="",
            routing_key=reply_to,
            message_id=message_id,
            correlation_id=correlation_id,
            mandatory=False,
        )

    async def lifecycle(
        self, event: str, publisher_message_id: str, email_id: Any, at: datetime, **detail: Any
    ) -> None:
        """Publish ``email.<event>`` on ``mail.events``; the message id makes repeats droppable."""
        await self.publish(
            EmailLifecycleEvent(
                event=event,
                publisher_message_id=publisher_message_id,
                incoming_email_id=email_id,
                at=at,
                detail=detail,
            ),
            exchange=EVENTS.name,
            routing_key=f"email.{event}",
            message_id=f"{email_id}:{event}:{detail.get('attempt', 0)}",
            mandatory=False,
        )
