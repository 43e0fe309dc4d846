"""The sampler's queue gauges, round after round, on a real RabbitMQ."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from aio_pika.tools import OneShotCallback

from pipeline.app import build_context
from pipeline.messaging import declare_topology
from pipeline.observability.metrics import Metrics
from pipeline.observability.sampler import Sampler
from pipeline.settings import Settings
from pipeline.topology import INGEST_QUEUE

ROUNDS = 60


@pytest.fixture
async def sampler(amqp_url: str, tmp_path: Path) -> AsyncIterator[Sampler]:
    await declare_topology(amqp_url)
    settings = Settings(amqp_url=amqp_url, database_url=f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    ctx = build_context(settings)
    sampler = Sampler(ctx, Metrics(), interval_s=1)
    yield sampler
    await sampler.aclose()
    await ctx.engine.dispose()


def depth(sampler: Sampler, queue: str) -> float:
    value = sampler._metrics.registry.get_sample_value("mailpipe_queue_depth", {"queue": queue})
    assert value is not None
    return value


def live_close_callbacks() -> int:
    gc.collect()
    return sum(isinstance(obj, OneShotCallback) for obj in gc.get_objects())


async def publish(amqp_url: str, queue: str, n: int) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for i in range(n):
            await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id=str(i)), routing_key=queue)


async def test_every_round_reads_the_queue_depth_from_the_broker(sampler: Sampler, amqp_url: str) -> None:
    await sampler.sample_queues()
    assert depth(sampler, INGEST_QUEUE.name) == 0

    await publish(amqp_url, INGEST_QUEUE.name, 3)
    await sampler.sample_queues()
    assert depth(sampler, INGEST_QUEUE.name) == 3

    await publish(amqp_url, INGEST_QUEUE.name, 2)
    await sampler.sample_queues()
    assert depth(sampler, INGEST_QUEUE.name) == 5


async def test_sampling_rounds_leave_nothing_behind(sampler: Sampler) -> None:
    # A channel opened and closed per round left its close callback on the connection: one more
    # OneShotCallback (about 3.5 KB) for every round, for as long as the process ran.
    await sampler.sample_queues()
    before = live_close_callbacks()

    for _ in range(ROUNDS):
        await sampler.sample_queues()

    assert live_close_callbacks() - before == 0


async def test_a_round_that_loses_its_channel_is_followed_by_one_that_works(sampler: Sampler, amqp_url: str) -> None:
    await sampler.sample_queues()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(INGEST_QUEUE.name)
        with pytest.raises(aio_pika.exceptions.ChannelClosed):  # the passive declare of the deleted queue
            await sampler.sample_queues()
        await sampler.sample_once()  # logs, does not raise: a sampler must not stop a role

        await declare_topology(amqp_url)
        await publish(amqp_url, INGEST_QUEUE.name, 4)
        await sampler.sample_queues()

    assert depth(sampler, INGEST_QUEUE.name) == 4
