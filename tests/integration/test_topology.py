"""The topology in code, the committed definitions.json and the real broker agree."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika

from pipeline.settings import Settings
from pipeline.topology import QUEUES, definitions
from tests.support import running

ROOT = Path(__file__).resolve().parents[2]


def test_committed_definitions_match_the_topology_module() -> None:
    committed = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    assert committed == definitions(), "run `mailpipe topology export` and commit rabbitmq/definitions.json"


async def test_mailpipe_starts_on_a_broker_provisioned_from_definitions_json(amqp_url: str, database_url: str) -> None:
    vhost = urlsplit(amqp_url).path.lstrip("/")
    # A world-readable file: rabbitmqctl runs as the rabbitmq user, which cannot read pytest's
    # private tmp dirs, and 3.10's rabbitmqctl does not read definitions from stdin.
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir="/tmp", delete=False) as handle:
        json.dump(definitions(vhost=vhost), handle)
    path = Path(handle.name)
    path.chmod(0o644)
    try:
        result = subprocess.run(
            ["rabbitmqctl", "-q", "import_definitions", str(path)], capture_output=True, text=True, check=False
        )
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr

    await _wait_for_queues(amqp_url)  # the import runs asynchronously in the broker

    # FastStream re-declares every queue with its own arguments: a drift would fail here with
    # PRECONDITION_FAILED instead of starting.
    settings = Settings(amqp_url=amqp_url, database_url=database_url)
    async with running(settings, ["ingest", "scheduler"]):
        pass


async def _wait_for_queues(amqp_url: str) -> None:
    for _ in range(100):
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            try:
                for queue in QUEUES:
                    channel = await connection.channel()
                    await channel.declare_queue(queue.name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                await asyncio.sleep(0.1)
                continue
            return
    raise AssertionError("definitions import did not create the queues")
