"""A cheaper idle-connection check for httpx's connection pool (the Graph client's).

Before and after every request, httpcore's pool asks each pooled HTTP/1.1 connection whether
it has expired, and an idle connection answers by asking its stream whether the socket is
readable (a server that closed it). httpcore's AnyIO stream finds the socket for that through
AnyIO's typed-attribute lookup, which builds a mapping of every attribute on each call. With
the 16 connections a worker keeps to an HTTP/1.1 server (the emulator, a proxy), that lookup
cost about 0.4 ms of CPU per request (``bench`` ``graph-calls``' loop, 16 requests at a time:
1.87 -> 1.45 ms per ``sendMail``). :func:`install_readability_check` wraps the pool's network
backend so each stream looks its socket up once and answers with one ``poll``.

Everything else is the stream's own behaviour. Over HTTP/2, which Graph speaks, the pool
holds one connection per host and asks nothing of the kind, so this changes nothing there.
"""

# httpcore's stream and backend interfaces take a ``timeout`` argument; these wrappers pass it on.
# ruff: noqa: ASYNC109

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["install_readability_check"]


def _is_readable(sock: socket.socket | None) -> bool:
    # As httpcore's own check: a missing or closed socket counts as readable (it reads b"").
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _SocketOnceStream(httpcore.AsyncNetworkStream):
    """A network stream that answers ``is_readable`` from a socket it looked up once."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _SocketOnceStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _is_readable(self._socket)
        return self._inner.get_extra_info(info)


class _SocketOnceBackend(httpcore.AsyncNetworkBackend):
    """Wraps every stream ``inner`` opens in :class:`_SocketOnceStream`."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _SocketOnceStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _SocketOnceStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def install_readability_check(http_client: httpx.AsyncClient) -> int:
    """Wrap the network backend of every connection pool under ``http_client``; return how many.

    Call it before the first request: connections opened earlier keep the slower check. A
    transport that is not httpx's own (a test's ``MockTransport``) is left alone.
    """
    # httpx has no public way to reach a transport's pool; it and the pool's backend are
    # attributes every httpx 0.2x / httpcore 1.x release has had.
    transports = [http_client._transport, *http_client._mounts.values()]
    wrapped = 0
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.AsyncNetworkBackend) and not isinstance(backend, _SocketOnceBackend):
            pool._network_backend = _SocketOnceBackend(backend)  # type: ignore[union-attr]
            wrapped += 1
    return wrapped
