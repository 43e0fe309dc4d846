"""Time helpers: Graph's timestamp format and the monotonic clock used for delays.

Wall-clock time is only ever *shown* (``createdDateTime``, ``innerError.date``, stats keyed by
epoch second); every delay, window and expiry is measured on :func:`time.monotonic` so a clock
step on the host cannot reorder events.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["iso", "iso_now", "monotonic", "utc_now", "wall_after"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Graph's ``DateTimeOffset`` rendering: ``2024-05-01T12:00:00Z`` (second precision, ``Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_now() -> str:
    """:func:`iso` of the current time."""
    return iso(utc_now())


def wall_after(seconds: float) -> datetime:
    """The wall-clock time ``seconds`` from now, for expiry timestamps shown to clients."""
    return utc_now() + timedelta(seconds=seconds)


def monotonic() -> float:
    """Seconds on the monotonic clock; the only clock used for decisions."""
    return time.monotonic()
