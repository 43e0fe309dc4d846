"""The limiter every Graph call goes through.

Outlook throttles per app and mailbox (4 concurrent requests, 10,000 requests per 10 minutes,
150 MB uploaded per 5 minutes), and a 429 for one mailbox says nothing about another. The
mailer therefore asks a :class:`GraphLimiter` for a slot *per mailbox* before each request, and
tells it when Graph answered 429 so that every worker pauses that mailbox, not just the one
that was throttled.

The shared implementation lives elsewhere; :class:`NoLimiter` is the do-nothing stand-in for
tests and single-shot tools.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["DEFAULT_THROTTLE_PAUSE_S", "GraphLimiter", "NoLimiter"]

#: Pause reported to the limiter after a 429 that carried no usable ``Retry-After``.
DEFAULT_THROTTLE_PAUSE_S = 10.0


class GraphLimiter(Protocol):
    """Paces Graph calls per mailbox.

    ``slot(mailbox)`` returns an async context manager that waits until the mailbox has both a
    rate token and a free concurrency slot, holds the slot for the duration of the ``async
    with`` block and releases it on exit, even on error or cancellation.

    ``report_throttled(mailbox, retry_after_s)`` is called once per 429 answer, after the slot
    is released; the limiter pauses that mailbox for ``retry_after_s`` seconds everywhere it
    is shared.
    """

    def slot(self, mailbox: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Wait for a rate token and a concurrency slot for ``mailbox``; hold it while inside."""
        ...

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        """Pause ``mailbox`` for ``retry_after_s`` seconds because Graph answered 429."""
        ...


class NoLimiter:
    """A :class:`GraphLimiter` that never waits and ignores throttling reports."""

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        """Enter at once."""
        yield

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        """Do nothing."""
