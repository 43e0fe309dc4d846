"""Graph request limiter used by every Graph call (see :class:`pipeline.graph.GraphLimiter`).

This module holds the process-local limiter: one token bucket (aiolimiter) and one
concurrency semaphore per sender mailbox, plus a pause honoured after a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiolimiter import AsyncLimiter

from pipeline.context import AppContext
from pipeline.settings import Settings

__all__ = ["LocalLimiter", "build_limiter"]


class LocalLimiter:
    """Per-mailbox rate and concurrency limits inside one process."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._rates: dict[str, AsyncLimiter] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._paused_until: dict[str, float] = {}

    def _rate(self, mailbox: str) -> AsyncLimiter:
        limiter = self._rates.get(mailbox)
        if limiter is None:
            burst = self._settings.mailbox_burst
            limiter = AsyncLimiter(burst, burst / self._settings.mailbox_rate_per_s)
            self._rates[mailbox] = limiter
        return limiter

    def _slot(self, mailbox: str) -> asyncio.Semaphore:
        return self._slots.setdefault(mailbox, asyncio.Semaphore(self._settings.mailbox_max_concurrency))

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        key = mailbox.lower()
        loop = asyncio.get_running_loop()
        async with self._slot(key):
            while (wait := self._paused_until.get(key, 0.0) - loop.time()) > 0:
                await asyncio.sleep(wait)
            await self._rate(key).acquire()
            yield

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        loop = asyncio.get_running_loop()
        key = mailbox.lower()
        self._paused_until[key] = max(self._paused_until.get(key, 0.0), loop.time() + retry_after_s)

    async def aclose(self) -> None:
        return None


async def build_limiter(ctx: AppContext) -> LocalLimiter:
    return LocalLimiter(ctx.settings)
