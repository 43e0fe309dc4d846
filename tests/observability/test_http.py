"""/livez, /readyz and the port they are served on, against real outages of the database and broker."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from pipeline.errors import ConfigError
from pipeline.observability.http import HealthServer
from pipeline.settings import Settings
from tests.support import running, wait_until


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        return await http.get(path)


@pytest.mark.parametrize("where", ["sqlite-in-a-missing-directory", "postgresql-on-a-closed-port"])
async def test_readyz_is_503_naming_the_database_when_it_is_unreachable(
    amqp_url: str, tmp_path: Path, where: str
) -> None:
    if where.startswith("sqlite"):
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'mailpipe.db'}"
    else:
        database_url = "postgresql+asyncpg://postgres@127.0.0.1:1/mailpipe"
    settings = Settings(amqp_url=amqp_url, database_url=database_url, http_port=0)
    async with running(settings, ["ingest"]) as ctx:
        assert ctx.http_server is not None
        port = ctx.http_server.port
        assert (await _get(port, "/livez")).status_code == 200
        ready = await _get(port, "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False
        assert set(body["down"]) == {"database"}, body


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_readyz_follows_the_broker_connection(amqp_url: str, database_url: str) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    settings = Settings(amqp_url=amqp_url, database_url=database_url, http_port=0)
    async with running(settings, ["ingest"]) as ctx:
        assert ctx.http_server is not None
        port = ctx.http_server.port
        ready = await _get(port, "/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True, "down": {}}

        # Take the broker away from this process: no permission to reconnect, connections closed.
        _rabbitmqctl("clear_permissions", "-p", vhost, "guest")
        _rabbitmqctl("close_all_connections", "-p", vhost, "test: broker outage")
        try:

            async def broker_down() -> bool:
                response = await _get(port, "/readyz")
                return response.status_code == 503 and "broker" in response.json()["down"]

            await wait_until(broker_down, timeout_s=30, what="/readyz to report the broker down")
            assert (await _get(port, "/livez")).status_code == 200
        finally:
            _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

        async def ready_again() -> bool:
            return (await _get(port, "/readyz")).status_code == 200

        await wait_until(ready_again, timeout_s=60, what="/readyz back to 200 after the broker returned")


def test_a_taken_port_is_a_config_error_naming_the_settings() -> None:
    settings = Settings(http_port=0)
    first = HealthServer(SimpleNamespace(settings=settings))  # type: ignore[arg-type]
    first.bind()
    try:
        taken = Settings(http_port=first.port)
        with pytest.raises(ConfigError, match=r"MAILPIPE_HTTP_PORT: cannot listen on 127\.0\.0\.1"):
            HealthServer(SimpleNamespace(settings=taken)).bind()  # type: ignore[arg-type]
    finally:
        asyncio.run(first.stop())
