"""Helpers for tests that run mailpipe against the real broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.app import create_app
from pipeline.context import AppContext
from pipeline.settings import ROLES, Role, Settings


@asynccontextmanager
async def running(settings: Settings, roles: Sequence[Role] = ROLES) -> AsyncIterator[AppContext]:
    """Run mailpipe's roles in this event loop for the duration of the block."""
    if settings.http_port == Settings.model_fields["http_port"].default:
        # Tests and role subprocesses run side by side: each health server takes a free port.
        settings = settings.model_copy(update={"http_port": 0})
    app, ctx = create_app(settings, roles)
    async with app:
        yield ctx


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout_s: float = 60.0, interval_s: float = 0.2, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)


def sample_email(n: int, **overrides: Any) -> dict[str, Any]:
    email: dict[str, Any] = {
        "publisher_message_id": f"msg-{n}",
        "from": "sender@contoso.example",
        "to": [f"rcpt{n}@fabrikam.example"],
        "subject": f"Invoice {n}",
        "body": {"contentType": "text", "content": f"Hello {n}"},
    }
    email.update(overrides)
    return email


class Publisher:
    """A plain AMQP publisher, as a service in any language would be: persistent, confirmed."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> Publisher:
        self.connection = await aio_pika.connect_robust(self._url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.connection is not None
        # This is the test's own AMQP client, not mailpipe's: aio-pika's robust connection close
        # was seen to hang once its channel was closed (CI, 2026-11-22), so bound it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connection.close(), timeout=10)

    async def publish(
        self,
        body: bytes | dict[str, Any],
        *,
        routing_key: str = "send-email",
        reply_to: str | None = None,
        message_id: str | None = None,
    ) -> None:
        assert self.channel is not None
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        exchange = await self.channel.get_exchange("mail.commands")
        await exchange.publish(
            aio_pika.Message(
                raw,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                reply_to=reply_to,
                message_id=message_id,
            ),
            routing_key=routing_key,
        )

    async def publish_many(self, bodies: Sequence[bytes | dict[str, Any]], **kwargs: Any) -> None:
        """Publish with up to 100 confirms in flight."""
        for start in range(0, len(bodies), 100):
            await asyncio.gather(*(self.publish(b, **kwargs) for b in bodies[start : start + 100]))

    async def wait_for_consumer(self, queue_name: str, *, timeout_s: float = 60.0) -> None:
        """Wait until ``queue_name`` exists and has a consumer (the role has started)."""
        assert self.connection is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            channel = await self.connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
                if queue.declaration_result.consumer_count:
                    return
            except aio_pika.exceptions.ChannelClosed:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
            await asyncio.sleep(0.2)
        raise AssertionError(f"no consumer on {queue_name} after {timeout_s}s")

    async def declare_queue(self, name: str) -> aio_pika.abc.AbstractQueue:
        assert self.channel is not None
        return await self.channel.declare_queue(name, durable=True)

    async def drain(self, queue_name: str, *, idle_s: float = 1.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Read every message currently in ``queue_name`` (acking them)."""
        assert self.channel is not None
        queue = await self.channel.get_queue(queue_name)
        messages = []
        while True:
            message = await queue.get(fail=False, timeout=idle_s)
            if message is None:
                return messages
            await message.ack()
            messages.append(message)


def engine_for(settings: Settings) -> AsyncEngine:
    return create_async_engine(settings.database_url)


async def count(engine: AsyncEngine, model: Any, *where: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model).where(*where)) or 0)


EMULATOR_TOKEN = "test-token"


def pipeline_settings(amqp_url: str, database_url: str, emulator: Any, **overrides: Any) -> Settings:
    """Settings for a whole-pipeline test: fast polls and short retry delays."""
    values: dict[str, Any] = {
        "amqp_url": amqp_url,
        "database_url": database_url,
        "graph_base_url": emulator.base_url,
        "graph_static_token": EMULATOR_TOKEN,
        "graph_sent_lookup_deadline_s": 3.0,
        "graph_sent_lookup_interval_s": 0.25,
        "scheduler_poll_interval_s": 0.2,
        "retry_base_delay_s": 0.2,
        "retry_max_delay_s": 2.0,
        "sweep_interval_s": 1.0,
        "mailbox_rate_per_s": 200.0,
        "mailbox_burst": 50,
    }
    values.update(overrides)
    return Settings(**values)
