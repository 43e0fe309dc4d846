"""Drive a limiter with busy workers and measure what it let through."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence

from pipeline.limiter import SharedLimiter

Interval = tuple[float, float]


async def run_calls(
    limiter: SharedLimiter, mailbox: str, *, workers: int, until: float, call_s: float
) -> list[Interval]:
    """``workers`` coroutines each entering ``slot(mailbox)`` back to back until wall time ``until``.

    Returns one (entered, left) wall-clock pair per call: ``entered`` right after the slot was
    granted, ``left`` before its lease is freed.
    """
    intervals: list[Interval] = []

    async def worker() -> None:
        while time.time() < until:
            async with limiter.slot(mailbox):
                entered = time.time()
                await asyncio.sleep(call_s)
                intervals.append((entered, time.time()))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return intervals


def max_in_window(times: Sequence[float], window_s: float = 1.0) -> int:
    """The most events in any half-open window of ``window_s`` (it starts at some event)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window_s) - i for i, t in enumerate(ordered)), default=0)


def max_overlap(intervals: Sequence[Interval]) -> int:
    """The most intervals open at one instant (a call that left as another entered counts once)."""
    edges = sorted([(left, -1) for _, left in intervals] + [(entered, 1) for entered, _ in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak
