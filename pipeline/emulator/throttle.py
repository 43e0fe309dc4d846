"""Per-mailbox throttling modelled on Outlook's limits (graph-facts §3.1).

Three rules, checked in this order for each Graph call to a mailbox:

1. **Pause.**  After a 429 the mailbox is paused until its ``Retry-After`` has elapsed; a call
   arriving earlier is an *early call* and is answered 429 again.  Graph keeps counting usage
   while a client is throttled, so ignoring Retry-After only prolongs the pain.  A 503's
   ``Retry-After`` is tracked too, but only to flag early calls: the call is served.
2. **Concurrency.**  More than ``mailbox_max_concurrency`` calls in flight -> 429
   "Application is over its MailboxConcurrency limit." with ``throttle_retry_after_s``.
3. **Rate.**  A sliding window of ``mailbox_window_s`` admits ``mailbox_requests_per_window``
   calls.  The ``Retry-After`` is the time until the oldest admitted call leaves the window, but
   never less than ``throttle_retry_after_s``, so a client that obeys it is never early.

Rejected calls do not occupy the window: only admitted work is "usage" here.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from .config import EmulatorConfig
from .errors import GraphError, format_seconds

__all__ = ["Throttle", "ThrottledError"]

ThrottleKind = Literal["early", "concurrency", "rate"]

_CONCURRENCY_MESSAGE = "Application is over its MailboxConcurrency limit."


class ThrottledError(GraphError):
    """Raised by :meth:`Throttle.admit` for a 429; ``kind`` says which rule refused the call."""

    def __init__(self, kind: ThrottleKind, message: str, retry_after_s: float) -> None:
        super().__init__(429, "ApplicationThrottled", message, headers={"Retry-After": format_seconds(retry_after_s)})
        self.kind = kind
        self.retry_after_s = retry_after_s


@dataclass
class _MailboxState:
    in_flight: int = 0
    admitted: deque[float] = field(default_factory=deque)
    retry_after_until: float = 0.0  # end of the last Retry-After sent (429 or 503)
    throttled_until: float = 0.0  # end of the last 429's Retry-After: enforced
    throttle_message: str = ""


class Throttle:
    """Admission control per mailbox; thread-safe, non-blocking (it refuses, never waits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, _MailboxState] = {}

    def reset(self) -> None:
        """Forget all in-flight counts, windows and pauses."""
        with self._lock:
            self._boxes.clear()

    def is_early(self, mailbox: str, now: float) -> bool:
        """Whether a call arriving ``now`` ignores the last Retry-After this mailbox was given."""
        with self._lock:
            box = self._boxes.get(mailbox)
            return box is not None and now < box.retry_after_until

    def admit(self, mailbox: str, config: EmulatorConfig, now: float) -> int:
        """Admit one call and return the mailbox's new in-flight count, or raise
        :class:`ThrottledError`.  Pair every admission with :meth:`release`.
        """
        with self._lock:
            box = self._boxes.setdefault(mailbox, _MailboxState())
            if now < box.throttled_until:
                # Same words as the 429 that started the pause: to the client it is one episode.
                raise ThrottledError("early", box.throttle_message, box.throttled_until - now)
            limit = config.mailbox_max_concurrency
            if limit is not None and box.in_flight >= limit:
                raise self._throttle(box, now, "concurrency", _CONCURRENCY_MESSAGE, config.throttle_retry_after_s)
            self._expire(box, now, config.mailbox_window_s)
            per_window = config.mailbox_requests_per_window
            if per_window is not None and len(box.admitted) >= per_window:
                frees_in = box.admitted[-per_window] + config.mailbox_window_s - now
                message = (
                    "Application is over its MailboxRequests limit; "
                    f"at most {per_window} requests per {config.mailbox_window_s:g} s."
                )
                raise self._throttle(box, now, "rate", message, max(frees_in, config.throttle_retry_after_s))
            box.in_flight += 1
            box.admitted.append(now)
            return box.in_flight

    def release(self, mailbox: str) -> None:
        """End an admitted call."""
        with self._lock:
            box = self._boxes.get(mailbox)
            if box is not None and box.in_flight > 0:
                box.in_flight -= 1

    def note_retry_after(self, mailbox: str, now: float, retry_after_s: float) -> None:
        """Record a Retry-After sent with a 503: later calls before it ends count as early."""
        with self._lock:
            box = self._boxes.setdefault(mailbox, _MailboxState())
            box.retry_after_until = max(box.retry_after_until, now + retry_after_s)

    @staticmethod
    def _throttle(
        box: _MailboxState, now: float, kind: ThrottleKind, message: str, retry_after_s: float
    ) -> ThrottledError:
        """Start (or extend) the mailbox's pause and build the 429 that announces it."""
        box.throttled_until = max(box.throttled_until, now + retry_after_s)
        box.retry_after_until = max(box.retry_after_until, box.throttled_until)
        box.throttle_message = message
        return ThrottledError(kind, message, retry_after_s)

    @staticmethod
    def _expire(box: _MailboxState, now: float, window_s: float) -> None:
        while box.admitted and box.admitted[0] <= now - window_s:
            box.admitted.popleft()
