"""Retry timing: exponential backoff with full jitter, and ``Retry-After`` obeyed exactly.

A retry of an email never sleeps in a consumer: the email is parked with ``next_attempt_at``
and the scheduler dispatches it again when due (see :mod:`pipeline.outcome`). The only waits
inside a consumer are for infrastructure (database, broker) through :func:`infra_retrying`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from pipeline.errors import StoreUnavailable
from pipeline.settings import RetryStep, Settings

__all__ = ["RetryPolicy", "infra_retrying", "retry_policy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how late one step is retried."""

    max_attempts: int
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0

    def delay_s(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``, given the failed attempt number (1-based).

        A server's ``Retry-After`` wins exactly (it is what Graph asks for; waiting less earns
        another 429, waiting more wastes the mailbox's budget). Otherwise full jitter:
        uniform in ``[0, min(max, base * 2**(attempt-1))]``, which spreads retries of a burst
        of failures instead of re-synchronising them.
        """
        if retry_after_s is not None and retry_after_s >= 0:
            return retry_after_s
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(0, ceiling)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


def retry_policy(settings: Settings, step: RetryStep) -> RetryPolicy:
    """The policy of ``step``: its ``<step>_max_attempts``, and its delays from
    ``retry_delays_s`` or else ``retry_base_delay_s`` / ``retry_max_delay_s``."""
    attempts = {
        "send": settings.send_max_attempts,
        "upload": settings.upload_max_attempts,
        "backup": settings.backup_max_attempts,
        "download": settings.download_max_attempts,
    }[step]
    base_s, max_s = settings.retry_delays_s.get(step, (settings.retry_base_delay_s, settings.retry_max_delay_s))
    return RetryPolicy(attempts, base_s, max_s)


def infra_retrying(deadline_s: float = 60.0) -> AsyncRetrying:
    """Retry a database operation that failed for a passing reason, for at most ``deadline_s``.

    Used inside a handler so a short database restart costs a pause, not a redelivery storm.
    """
    return AsyncRetrying(
        retry=retry_if_exception_type(StoreUnavailable),
        wait=wait_random_exponential(multiplier=0.2, max=5.0),
        stop=stop_after_delay(deadline_s),
        reraise=True,
    )
