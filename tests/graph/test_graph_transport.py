"""pipeline.graph.transport: the pool's idle-connection check, against a real socket server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvloop

from pipeline.graph.transport import install_readability_check

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


class _ClosingServer:
    """Answers requests with keep-alive; closes each connection after its first answer if ``close``."""

    def __init__(self, *, close: bool = True) -> None:
        self.close = close
        self.connections = 0
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while True:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break  # the client closed it
            writer.write(_RESPONSE)
            await writer.drain()
            if self.close:
                break  # the server-side close an idle pooled connection must notice
        writer.close()

    async def __aenter__(self) -> _ClosingServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:  # a kept-alive connection outlives the server's close
            writer.close()
            await writer.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[_ClosingServer]:
    async with _ClosingServer() as running:
        yield running


async def test_a_connection_the_server_closed_while_idle_is_not_reused(server: _ClosingServer) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        assert install_readability_check(client) == 1
        assert (await client.get(server.url)).text == "ok"
        await asyncio.sleep(0.2)  # the server has closed the pooled connection by now

        # Reusing the closed connection would fail with "Server disconnected".
        assert (await client.get(server.url)).text == "ok"

    assert server.connections == 2


async def test_installed_once_per_pool_and_never_on_a_foreign_transport() -> None:
    # trust_env off: a proxy set in the environment would add a pool of its own.
    async with httpx.AsyncClient(http2=True, trust_env=False) as client:
        assert install_readability_check(client) == 1
        assert install_readability_check(client) == 0
    mock = httpx.MockTransport(lambda request: httpx.Response(204))
    async with httpx.AsyncClient(transport=mock) as client:
        assert install_readability_check(client) == 0


async def test_a_connection_still_open_is_reused() -> None:
    # Fails when the check cannot find the socket: it then answers "readable" (closed) every time.
    async with _ClosingServer(close=False) as server, httpx.AsyncClient(trust_env=False) as client:
        install_readability_check(client)
        for _ in range(3):
            assert (await client.get(server.url)).text == "ok"
            await asyncio.sleep(0.05)
    assert server.connections == 1


def test_the_check_also_holds_on_uvloop() -> None:
    # Roles may run on uvloop (MAILPIPE_EVENT_LOOP), whose transports hand out their own socket objects.
    async def scenario() -> None:
        async with _ClosingServer() as closing:
            await test_a_connection_the_server_closed_while_idle_is_not_reused(closing)
        await test_a_connection_still_open_is_reused()

    uvloop.run(scenario())
