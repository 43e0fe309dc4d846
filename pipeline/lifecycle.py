"""Start and stop what each role needs, around the FastStream broker's own lifecycle.

Order at start: (migrations, if asked) -> broker connection -> the whole topology declared ->
role clients (Graph, downloads) -> health port bound -> consumers start (FastStream) -> health
server and background loops (the heap trimmer in every role; the scheduler role also runs the
metrics sampler and retention).
The topology is declared before any consumer runs because publishing to an exchange that does
not exist closes the channel. At stop: ``/readyz`` turns 503, loops are cancelled, FastStream
drains in-flight handlers for ``graceful_timeout_s``, then clients and the health server close.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import httpx
import structlog

from pipeline.context import AppContext
from pipeline.crypto import load_keyring
from pipeline.db.engine import server_warnings
from pipeline.db.migrate import upgrade
from pipeline.eventloop import running_loop_name
from pipeline.graph import GraphMailer, build_graph_client
from pipeline.limiter import build_limiter
from pipeline.memory import HeapTrimmer
from pipeline.messaging import declare_topology
from pipeline.observability.graphcalls import GraphCallObserver
from pipeline.observability.http import HealthServer
from pipeline.observability.sampler import Sampler
from pipeline.retention import run_forever as run_retention_forever
from pipeline.settings import Role
from pipeline.steps.scheduler import Scheduler

__all__ = ["GRAPH_ROLES", "RoleServices"]

log = structlog.get_logger(__name__)

GRAPH_ROLES: frozenset[Role] = frozenset({"send-no-attachments", "send-attachments", "backup"})


#: How long stop() waits for cancelled background loops (scheduler, retention, sampler, trimmer).
BACKGROUND_STOP_TIMEOUT_S = 5.0


class RoleServices:
    """The clients and loops of the roles one process runs."""

    def __init__(self, ctx: AppContext, roles: Sequence[Role]) -> None:
        self._ctx = ctx
        self._roles = tuple(roles)
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = contextlib.AsyncExitStack()
        self._sampler: Sampler | None = None

    async def before_start(self) -> None:
        ctx, settings = self._ctx, self._ctx.settings
        if settings.auto_migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        ctx.keyring = load_keyring(settings)
        await ctx.broker.connect()
        await declare_topology(settings.amqp_url)
        if GRAPH_ROLES.intersection(self._roles):
            settings.require_graph_credentials()
            graph = build_graph_client(settings)
            self._stack.push_async_callback(graph.aclose)
            plain = httpx.AsyncClient(
                timeout=httpx.Timeout(settings.attachment_download_timeout_s, connect=10.0),
                follow_redirects=True,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            self._stack.push_async_callback(plain.aclose)
            limiter = await build_limiter(ctx)
            self._stack.push_async_callback(limiter.aclose)
            ctx.download_client = plain
            tracer = ctx.tracing.tracer if ctx.tracing is not None else None
            ctx.mailer = GraphMailer(graph, plain, limiter, settings, observer=GraphCallObserver(ctx.metrics, tracer))
        if "scheduler" in self._roles:
            ctx.scheduler = Scheduler(ctx)
            for warning in await server_warnings(ctx.engine):
                log.warning("database server", problem=warning)
        # Bound last here, still before any consumer runs: a taken port fails the start.
        ctx.http_server = HealthServer(ctx)
        ctx.http_server.bind()
        log.info("roles ready", roles=list(self._roles), worker=ctx.worker_name, event_loop=running_loop_name())

    async def after_start(self) -> None:
        ctx = self._ctx
        if ctx.http_server is not None:
            await ctx.http_server.start()
        if ctx.settings.memory_trim_interval_s > 0:
            trimmer = HeapTrimmer(ctx.metrics.heap_trimmed if ctx.metrics is not None else None)
            self._tasks.append(
                asyncio.create_task(trimmer.run_forever(ctx.settings.memory_trim_interval_s), name="heap-trimmer")
            )
        if ctx.scheduler is not None:
            self._tasks.append(asyncio.create_task(ctx.scheduler.run_forever(), name="scheduler"))
            # Database-wide work runs in the scheduler role only, not in every worker pod.
            self._tasks.append(asyncio.create_task(run_retention_forever(ctx.sessions, ctx.settings), name="retention"))
            if ctx.metrics is not None:
                self._sampler = Sampler(ctx, ctx.metrics)
                self._tasks.append(asyncio.create_task(self._sampler.run_forever(), name="metrics-sampler"))

    async def stop(self) -> None:
        if self._ctx.http_server is not None:
            self._ctx.http_server.draining()  # /readyz says 503 while in-flight messages drain
        for task in self._tasks:
            task.cancel()
        # Bounded: aiormq can swallow a cancellation and then wait on its connection's reader
        # (seen in CI: the queue sampler's passive declare never returned, and a stopping role hung).
        # Such a task ends when close() closes that connection.
        done, pending = await asyncio.wait(self._tasks, timeout=BACKGROUND_STOP_TIMEOUT_S) if self._tasks else ((), ())
        for task in pending:
            log.warning("background task did not stop when cancelled; closing its clients", task=task.get_name())
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                # A background loop that died earlier must not turn a clean drain into a crash.
                log.error("background task had failed", task=task.get_name(), exc_info=error)
        self._tasks.clear()

    async def close(self) -> None:
        # The health server outlives the drain, so /livez answers until the process exits.
        if self._ctx.http_server is not None:
            await self._ctx.http_server.stop()
        if self._sampler is not None:
            await self._sampler.aclose()
        await self._stack.aclose()
        await self._ctx.engine.dispose()
        if self._ctx.tracing is not None:
            self._ctx.tracing.shutdown()
