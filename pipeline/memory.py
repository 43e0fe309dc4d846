"""Hand the C heap's free pages back to the OS, so a long-running role's RSS follows what it uses.

glibc's ``malloc`` returns memory to the OS only from the top of its heap. A role handling
messages for hours frees chunks in the middle of it (bodies, responses, dicts larger than
pymalloc's 512 bytes), and those pages stay resident although nothing uses them. Measured in a
drain of 100,000 emails: ``send-no-attachments``' heap grew from 39.0 to 42.3 MB in 8 minutes
while the bytes in use stayed at 31.4 MB; one ``malloc_trim(0)`` took 5 MB off ``ingest``'s RSS.
Left alone, that creep read as a leak in every role's RSS (``bench/README.md``).

``malloc_trim(0)`` (glibc 2.8 and later) releases every free page of the heap, not just its top.
:class:`HeapTrimmer` calls it every ``memory_trim_interval_s`` (0 turns it off) from the event
loop. On a C library without ``malloc_trim`` (musl, macOS) it does nothing and says so once.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["HeapTrimmer", "resident_bytes"]

log = structlog.get_logger(__name__)

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process's RSS from ``/proc/self/statm``; None where there is no such file."""
    try:
        return int(Path("/proc/self/statm").read_bytes().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def _load_malloc_trim() -> Callable[[int], int] | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` on demand or every ``interval_s``; reports what it released.

    ``on_released(bytes, seconds)`` (metrics) is told each round's RSS drop and the call's time.
    """

    def __init__(self, on_released: Callable[[int, float], None] | None = None) -> None:
        self._trim = _load_malloc_trim()
        self._on_released = on_released

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> int:
        """One ``malloc_trim(0)``; returns the bytes of RSS it gave back (0 when unavailable)."""
        if self._trim is None:
            return 0
        before = resident_bytes()
        started = time.perf_counter()
        self._trim(0)
        seconds = time.perf_counter() - started
        after = resident_bytes()
        released = max(0, before - after) if before is not None and after is not None else 0
        if self._on_released is not None:
            self._on_released(released, seconds)
        return released

    async def run_forever(self, interval_s: float) -> None:
        if self._trim is None:
            log.info("malloc_trim is not available on this C library; the heap is not trimmed")
            return
        while True:
            await asyncio.sleep(interval_s)
            self.trim()
