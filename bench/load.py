"""Publishing SendEmail messages (timestamped), reading receipts, and reading outcomes from the DB."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC
from typing import Any

import aio_pika
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["Load", "emails", "percentiles"]

SENT_STATES = ("sent", "backup_wait", "backed_up")


def emails(
    count: int, run_id: str, mailboxes: int, files_url: str | None = None, sizes_mb: tuple[int, int] = (1, 20)
) -> list[dict[str, Any]]:
    """``count`` plain emails over ``mailboxes`` senders; with ``files_url``, one file by URL each."""
    out = []
    lo, hi = sizes_mb
    for n in range(count):
        email: dict[str, Any] = {
            "publisher_message_id": f"bench-{run_id}-{n}",
            "from": f"sender{n % mailboxes}@contoso.example",
            "to": [f"customer{n}@fabrikam.example"],
            "subject": f"Benchmark {n}",
            "body": {"contentType": "html", "content": f"<p>Benchmark email {n}.</p>"},
        }
        if files_url:
            size = (lo + n % (hi - lo + 1)) * 1024 * 1024 + n
            email["attachments"] = [
                {
                    "name": f"file-{n}.bin",
                    "size": size,
                    "contentType": "application/octet-stream",
                    "urlOrId": f"{files_url}/{size}/{run_id}-{n}",
                }
            ]
        out.append(email)
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {
        "n": len(ordered),
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


class Load:
    """A publisher as any service would be (persistent, confirmed), plus a reply queue for receipts."""

    def __init__(self, amqp_url: str, database_url: str) -> None:
        self.amqp_url = amqp_url
        self.engine: AsyncEngine = create_async_engine(database_url)
        self.published: dict[str, float] = {}
        self.receipts: dict[str, float] = {}
        self.reply_queue = "bench.replies"

    async def __aenter__(self) -> Load:
        self.connection = await aio_pika.connect_robust(self.amqp_url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.get_exchange("mail.commands")
        reply_channel = await self.connection.channel()
        await reply_channel.set_qos(prefetch_count=500)
        queue = await reply_channel.declare_queue(self.reply_queue, durable=True)
        await queue.consume(self._on_receipt, no_ack=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.connection.close()
        await self.engine.dispose()

    async def _on_receipt(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if message.correlation_id:
            self.receipts.setdefault(message.correlation_id, time.time())

    async def publish(self, email: dict[str, Any]) -> None:
        key = email["publisher_message_id"]
        self.published[key] = time.time()
        await self.exchange.publish(
            aio_pika.Message(
                json.dumps(email).encode(),
                content_type="application/json",
                message_id=key,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                reply_to=self.reply_queue,
            ),
            routing_key="send-email",
        )

    async def publish_backlog(self, batch: Sequence[dict[str, Any]], in_flight: int = 100) -> float:
        """As fast as confirms allow (``in_flight`` unconfirmed); returns the seconds it took."""
        start = time.monotonic()
        for i in range(0, len(batch), in_flight):
            await asyncio.gather(*(self.publish(e) for e in batch[i : i + in_flight]))
        return time.monotonic() - start

    async def publish_steady(self, batch: Sequence[dict[str, Any]], rate_per_s: float) -> float:
        """One email every ``1/rate`` seconds on a fixed schedule (no coordinated omission)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n, email in enumerate(batch):
            delay = start + n / rate_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.publish(email)))
        await asyncio.gather(*tasks)
        return loop.time() - start

    async def counts(self, prefix: str) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT status, count(*) FROM incoming_emails WHERE publisher_message_id LIKE :p GROUP BY status"),
                {"p": prefix + "%"},
            )
            return {str(status): int(n) for status, n in rows.all()}

    async def wait_done(self, prefix: str, total: int, timeout_s: float, final: str = "backed_up") -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = await self.counts(prefix)
            if counts.get(final, 0) + counts.get("failed", 0) >= total:
                break
            await asyncio.sleep(0.5)
        return counts

    async def event_times(self, event: str, prefix: str) -> dict[str, float]:
        """publisher_message_id -> epoch seconds of its first ``event`` row in ``email_events``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT publisher_message_id, min(created_at) FROM email_events "
                    "WHERE event = :e AND publisher_message_id LIKE :p GROUP BY publisher_message_id"
                ),
                {"e": event, "p": prefix + "%"},
            )
            out = {}
            for key, created in rows.all():
                out[str(key)] = _epoch(created)
            return out


def _epoch(value: Any) -> float:
    from datetime import datetime  # noqa: PLC0415

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())
