"""The Graph limiter shared by every worker in every process and pod (see :class:`GraphLimiter`).

State lives in the database (:mod:`pipeline.limiter_store`): a token bucket per sender mailbox
plus the global ``*`` bucket (``rate_buckets``), and a ``rate_leases`` row per Graph call in
flight, which holds the per-mailbox concurrency cap across processes. A 429 writes
``paused_until`` on the mailbox's row, so every process stops granting that mailbox.

In a process, each mailbox has a *pump* task and a FIFO of waiting calls. The pump asks the
database for as many calls as are waiting (one transaction grants up to a quarter of the burst
and up to the free leases), hands the leases out, and otherwise sleeps locally: until the pause
ends, until a token has refilled, or a short poll while other processes hold every lease. It
never spins on the database and sleeps at most ``limiter_refresh_s`` at a time, so changes made
with ``mailpipe limits set`` and pauses written elsewhere are seen within that interval.

Batching trade-off: tokens are taken only for calls already waiting; a token whose waiter left
meanwhile is dropped, never kept. No process can hoard a burst (local tokens "expire" at once),
and a pause or a lower rate applies from the next grant; the cost is one short transaction per
batch of waiting calls, plus lease releases, batched by one task into one ``DELETE`` per round.

Local smoothing is the pump's batching, not a per-process ``aiolimiter`` in front of the store
(decided 2026-12-05). A local bucket either meters only tokens the store already granted, which
adds waiting without saving a transaction, or hands out tokens it was never granted, which breaks
the shared limit as soon as two processes do it. Holding granted tokens and leases for a short
while and reusing them would save transactions. It would also make ``mailpipe limits set`` and
pauses slower to take effect and favour the busiest process, so it waits for its own tests
(bench/README.md, "What would close it", item 1).

Fairness: a process that frees a lease waits a random part of the poll interval before
granting again, instead of winning every race against processes that can only poll; so no
process is starved, at the cost of a freed slot idling ~``LEASE_POLL_S / 2`` when the cap binds.

With the database away, calls keep waiting (backoff up to ``BACKOFF_MAX_S``): none is let
through unlimited and no worker crashes. A live process renews its leases every third of
``lease_ttl_s``; a killed process's leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from pipeline.db.buckets import mailbox_key
from pipeline.errors import StoreUnavailable
from pipeline.limiter_store import LEASE_POLL_S, LimiterStore
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.context import AppContext

__all__ = [
    "BACKOFF_MAX_S",
    "DEFAULT_LEASE_TTL_S",
    "DisabledLimiter",
    "SharedLimiter",
    "build_limiter",
]

log = structlog.get_logger(__name__)

#: How long a lease outlives its last renewal; a killed process's calls stop counting after it.
DEFAULT_LEASE_TTL_S = 30.0
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
CLOSE_TIMEOUT_S = 5.0


class DisabledLimiter:
    """The limiter when ``limiter_enabled`` is false: never waits, ignores 429 reports."""

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        """Enter at once."""
        yield

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        """Do nothing."""

    async def aclose(self) -> None:
        """Nothing to close."""


@dataclass
class _Mailbox:
    waiters: deque[asyncio.Future[uuid.UUID]] = field(default_factory=deque)
    #: Set when this process frees a lease of the mailbox: a waiting pump may grant at once.
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None
    #: Loop time until which this process itself saw a 429 (honoured even with the DB away).
    paused_until: float = 0.0


class SharedLimiter:
    """A :class:`~pipeline.graph.GraphLimiter` whose limits hold across processes (module docstring)."""

    def __init__(
        self,
        store: LimiterStore,
        settings: Settings,
        *,
        holder: str,
        lease_ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        self._store = store
        self._refresh_s = settings.limiter_refresh_s
        self._holder = holder
        self._lease_ttl_s = lease_ttl_s
        self._mailboxes: dict[str, _Mailbox] = {}
        self._held: dict[uuid.UUID, str] = {}
        #: Leases whose calls ended, waiting for the releaser's next ``DELETE``.
        self._ended: dict[uuid.UUID, str] = {}
        self._ended_signal = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._daemons: list[asyncio.Task[None]] = []
        self._closed = False

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        """Wait for a token and a lease of ``mailbox``; free the lease on exit, even when cancelled."""
        key = mailbox_key(mailbox)
        lease = await self._acquire(key)
        try:
            yield
        finally:
            self._end(key, lease)

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        """Pause ``mailbox`` here at once and, through its row, in every other process."""
        key = mailbox_key(mailbox)
        loop = asyncio.get_running_loop()
        box = self._mailboxes.setdefault(key, _Mailbox())
        deadline = loop.time() + max(0.0, retry_after_s)
        box.paused_until = max(box.paused_until, deadline)
        try:
            await self._store.pause(key, max(0.0, retry_after_s))
        except StoreUnavailable as exc:
            log.warning("limiter: pause not shared yet, retrying", mailbox=key, error=str(exc))
            retry = asyncio.create_task(self._pause_later(key, deadline))
            self._background.add(retry)
            retry.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Fail calls still waiting, stop the background tasks, free the leases still held."""
        self._closed = True
        for box in self._mailboxes.values():
            _fail(box.waiters, RuntimeError("the Graph limiter was closed"))
            box.wake.set()
        # A pump in the middle of a grant finishes it (then frees what it got) rather than
        # being cancelled after the commit, which would leak the leases until they expire.
        pumps = [box.pump for box in self._mailboxes.values() if box.pump is not None]
        pending = (await asyncio.wait(pumps, timeout=CLOSE_TIMEOUT_S))[1] if pumps else set()
        for task in [*pending, *self._daemons]:
            task.cancel()
        await asyncio.gather(*pending, *self._daemons, *self._background, return_exceptions=True)
        leases = [*self._held, *self._ended]
        self._held, self._ended = {}, {}
        with contextlib.suppress(StoreUnavailable):
            await self._store.release(leases)

    async def _acquire(self, key: str) -> uuid.UUID:
        if self._closed:
            raise RuntimeError("the Graph limiter is closed")
        if not self._daemons:
            self._daemons = [
                asyncio.create_task(self._renew_forever(), name="limiter-heartbeat"),
                asyncio.create_task(self._release_forever(), name="limiter-releaser"),
            ]
        box = self._mailboxes.setdefault(key, _Mailbox())
        future: asyncio.Future[uuid.UUID] = asyncio.get_running_loop().create_future()
        box.waiters.append(future)
        if box.pump is None or box.pump.done():
            box.pump = asyncio.create_task(self._pump(key, box), name=f"limiter-pump:{key}")
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._end(key, future.result())  # granted in the same tick as the cancellation
            raise

    async def _pump(self, key: str, box: _Mailbox) -> None:
        try:
            await self._pump_until_idle(key, box)
        except Exception as exc:
            log.exception("limiter pump failed", mailbox=key)
            _fail(box.waiters, exc)

    async def _pump_until_idle(self, key: str, box: _Mailbox) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while True:
            box.waiters = deque(f for f in box.waiters if not f.done())
            if not box.waiters:
                return
            if (paused := box.paused_until - loop.time()) > 0:
                await self._sleep(box, paused)
                continue
            try:
                grant = await self._store.grant(
                    key, len(box.waiters), holder=self._holder, lease_ttl_s=self._lease_ttl_s
                )
                if grant.why == "missing":
                    await self._store.ensure(key)
                    continue
            except StoreUnavailable as exc:
                log.warning("limiter: database unavailable, calls wait", mailbox=key, error=str(exc))
                await self._sleep(box, random.uniform(backoff / 2, backoff))
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = BACKOFF_MIN_S
            self._hand_out(key, box, grant.leases)
            if not grant.leases:
                jitter = random.uniform(0.5, 1.5) if grant.why == "concurrency" else 1.0
                if await self._sleep(box, grant.wait_s * jitter):
                    # Woken by our own release: give polling processes their chance first.
                    await asyncio.sleep(random.uniform(0, LEASE_POLL_S))

    def _hand_out(self, key: str, box: _Mailbox, leases: Collection[uuid.UUID]) -> None:
        for lease in leases:
            while box.waiters and box.waiters[0].done():
                box.waiters.popleft()
            if box.waiters:
                self._held[lease] = key
                box.waiters.popleft().set_result(lease)
            else:
                self._end(key, lease)  # its waiter left meanwhile; the token is dropped, not kept

    async def _sleep(self, box: _Mailbox, seconds: float) -> bool:
        """Sleep ``seconds`` (at most one refresh interval); True if a release woke us early."""
        box.wake.clear()
        try:
            async with asyncio.timeout(min(seconds, self._refresh_s)):
                await box.wake.wait()
        except TimeoutError:
            return False
        return True

    def _end(self, key: str, lease: uuid.UUID) -> None:
        # No await here: a call cancelled while leaving its slot still frees the lease.
        self._held.pop(lease, None)
        self._ended[lease] = key
        self._ended_signal.set()

    async def _release_forever(self) -> None:
        """Free the ended leases in one statement per round; a lease leaves ``_ended`` only once
        its ``DELETE`` committed, so a failed or cancelled round loses nothing."""
        backoff = BACKOFF_MIN_S
        while True:
            await self._ended_signal.wait()
            self._ended_signal.clear()
            batch = dict(self._ended)
            try:
                await self._store.release(list(batch))
            except StoreUnavailable as exc:
                log.warning("limiter: leases not freed yet", count=len(batch), error=str(exc))
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                self._ended_signal.set()
                continue
            backoff = BACKOFF_MIN_S
            for lease in batch:
                self._ended.pop(lease, None)
            for key in set(batch.values()):
                if (box := self._mailboxes.get(key)) is not None:
                    box.wake.set()

    async def _pause_later(self, key: str, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(backoff, left))
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            with contextlib.suppress(StoreUnavailable):
                await self._store.pause(key, deadline - loop.time())
                return

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl_s / 3)
            try:
                lost = await self._store.renew(list(self._held), self._lease_ttl_s)
                lost &= self._held.keys()  # a call that ended meanwhile did not lose its lease
                if lost:
                    log.warning("limiter: leases expired while their calls ran", count=len(lost))
                await self._store.purge_expired()
            except StoreUnavailable as exc:
                log.warning("limiter: leases not renewed", error=str(exc))


def _fail(waiters: Collection[asyncio.Future[uuid.UUID]], error: BaseException) -> None:
    for future in waiters:
        if not future.done():
            future.set_exception(error)


async def build_limiter(ctx: AppContext) -> SharedLimiter | DisabledLimiter:
    """The limiter for this process: shared through ``ctx``'s database, or off by setting."""
    settings = ctx.settings
    if not settings.limiter_enabled:
        return DisabledLimiter()
    return SharedLimiter(LimiterStore(ctx.engine, settings), settings, holder=ctx.worker_name)
