"""Health and metrics over HTTP: ``/livez``, ``/readyz``, ``/metrics``, inside the role's event loop.

Every role serves them on ``MAILPIPE_HTTP_HOST:MAILPIPE_HTTP_PORT`` (``127.0.0.1:9464`` unless
configured; the Helm chart sets ``0.0.0.0``). The server is uvicorn running as a task of the
role's own loop, so ``/livez`` answering proves that loop is not blocked:

* ``GET /livez``: 200 while the loop runs. Kubernetes restarts the pod when it stops answering;
  it never depends on the broker or the database (an outage must not restart every pod).
* ``GET /readyz``: 200 when the broker connection is up and ``SELECT 1`` succeeds within
  ``CHECK_TIMEOUT_S``; otherwise 503 with ``{"ready": false, "down": {...}}`` naming what is
  down. Also 503 once the role is shutting down, so no new traffic is routed to it.
* ``GET /metrics``: the app's :class:`~pipeline.observability.metrics.Metrics` in Prometheus text.

The socket is bound in :meth:`HealthServer.bind` (before consumers start), so a port already in
use fails the start instead of leaving a pod that can never become ready. Port 0 picks a free
port; :attr:`HealthServer.port` is the bound one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from pipeline.context import AppContext
from pipeline.errors import ConfigError

__all__ = ["CHECK_TIMEOUT_S", "HealthServer", "build_http_app", "check_readiness"]

log = structlog.get_logger(__name__)

CHECK_TIMEOUT_S = 2.0


async def check_readiness(ctx: AppContext, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, str]:
    """Return what is down (name -> why); empty when the broker and the database both answer."""

    async def broker() -> str | None:
        return None if await ctx.broker.ping(timeout_s) else "no connection to RabbitMQ"

    async def database() -> str | None:
        try:
            async with asyncio.timeout(timeout_s), ctx.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except TimeoutError:
            return f"SELECT 1 did not answer within {timeout_s}s"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the class says which
            return f"SELECT 1 failed: {type(exc).__name__}"
        return None

    results = await asyncio.gather(broker(), database())
    return {name: why for name, why in zip(("broker", "database"), results, strict=True) if why}


def build_http_app(ctx: AppContext, draining: asyncio.Event) -> Starlette:
    """The Starlette app; ``draining`` set means the role is shutting down (not ready)."""

    async def livez(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        down = {"process": "shutting down"} if draining.is_set() else await check_readiness(ctx)
        return JSONResponse({"ready": not down, "down": down}, status_code=503 if down else 200)

    async def metrics(_: Request) -> Response:
        body = ctx.metrics.render() if ctx.metrics is not None else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: FastStream owns SIGTERM/SIGINT in this process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HealthServer:
    """uvicorn serving :func:`build_http_app` as a task of the current loop."""

    def __init__(self, ctx: AppContext) -> None:
        self._ctx = ctx
        self._draining = asyncio.Event()
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the health server is not bound")
        return int(self._socket.getsockname()[1])

    def bind(self) -> None:
        """Bind the listening socket; raises :class:`ConfigError` if the address is taken."""
        host, port = self._ctx.settings.http_host, self._ctx.settings.http_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
            sock.listen(128)  # Linux reports a port in use here, not at bind, with SO_REUSEADDR
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"MAILPIPE_HTTP_HOST/MAILPIPE_HTTP_PORT: cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        self._socket = sock

    async def start(self) -> None:
        if self._socket is None:
            self.bind()
        assert self._socket is not None
        config = uvicorn.Config(
            build_http_app(self._ctx, self._draining),
            log_config=None,  # keep mailpipe's log format; uvicorn's default config adds handlers
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http")
        log.info("health server listening", host=self._ctx.settings.http_host, port=self.port)

    def draining(self) -> None:
        """From now on ``/readyz`` answers 503; ``/livez`` and ``/metrics`` keep answering."""
        self._draining.set()

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=5.0)
            except TimeoutError:
                self._server.force_exit = True
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = self._task = None
