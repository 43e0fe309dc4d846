"""Shared fixtures: a fresh RabbitMQ vhost and a fresh database (SQLite and PostgreSQL) per test.

Tests talk to the real RabbitMQ and PostgreSQL on localhost. When either is unreachable the
tests fail (they do not skip): CI must prove the guarantees, not silently pass without them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
import structlog

from pipeline.db.migrate import upgrade
from pipeline.emulator import EmulatorConfig, serve_in_thread
from tests.support import EMULATOR_TOKEN

PG_ADMIN_DSN = os.environ.get("MAILPIPE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("MAILPIPE_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    """Tests read results, not logs: keep structlog at INFO so CI output stays readable."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A vhost of its own, so no test sees another's queues or leftovers."""
    vhost = f"mailpipe-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"{AMQP_BASE}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A migrated, empty database: a file for SQLite, a new database for PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mailpipe.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    name = f"mailpipe_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(upgrade, url)
    try:
        yield url
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def emulator() -> Iterator[Any]:
    """The Graph emulator on a free loopback port, reached through the real msgraph-sdk path."""
    with serve_in_thread(EmulatorConfig(static_token=EMULATOR_TOKEN, sent_items_delay_s=0.2, seed=7)) as running:
        yield running
