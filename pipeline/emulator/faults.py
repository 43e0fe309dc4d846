"""Fault injection: the transient failures real Graph produces, on demand.

* 503 ``ErrorServerBusy`` with ``Retry-After: 1``, before the call has any effect;
* 504 ``UnknownError`` *after* a send took effect — the case that makes a blind retry deliver
  the mail twice (graph-facts §3.5).

Every draw comes from one :class:`random.Random`, seeded from the config, so the same seed and
request order give the same faults.
"""

from __future__ import annotations

import random
import threading

from .errors import GraphError

__all__ = ["BUSY_RETRY_AFTER_S", "FaultInjector", "gateway_timeout", "server_busy"]

BUSY_RETRY_AFTER_S = 1.0


def server_busy() -> GraphError:
    """The injected 503, shaped like Outlook's."""
    return GraphError(
        503,
        "ErrorServerBusy",
        "The server is busy. Try again later.",
        headers={"Retry-After": str(int(BUSY_RETRY_AFTER_S))},
    )


def gateway_timeout() -> GraphError:
    """The injected 504 that follows a send which nevertheless happened."""
    return GraphError(504, "UnknownError", "The operation timed out waiting for the backend.")


class FaultInjector:
    """Seeded coin flips; thread-safe so the draw order is well defined."""

    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the sequence (on reset, or when the config's seed changes)."""
        with self._lock:
            self._random = random.Random(seed)

    def roll(self, rate: float) -> bool:
        """True with probability ``rate``; a rate of 0 never draws, so it never shifts the sequence."""
        if rate <= 0.0:
            return False
        with self._lock:
            return self._random.random() < rate
