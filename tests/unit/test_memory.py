"""pipeline.memory: malloc_trim hands the heap's free pages back, on the C library CI runs."""

from __future__ import annotations

import platform

import pytest

from pipeline.memory import HeapTrimmer, resident_bytes

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")

CHUNK_BYTES = 4096  # above pymalloc's 512 bytes: these come from malloc's heap
CHUNKS = 40_000  # 160 MB


def test_trim_gives_back_the_pages_freed_between_live_chunks() -> None:
    # Every 64th chunk stays alive, so the freed ones sit between live ones and glibc cannot
    # return them by shrinking the top of its heap: only malloc_trim hands them back.
    chunks = [bytearray(CHUNK_BYTES) for _ in range(CHUNKS)]
    for chunk in chunks:  # touch every page so it is resident
        chunk[::1024] = b"x" * len(chunk[::1024])
    kept = chunks[::64]
    del chunks
    reports: list[tuple[int, float]] = []
    trimmer = HeapTrimmer(lambda released, seconds: reports.append((released, seconds)))

    released = trimmer.trim()

    assert trimmer.available
    assert released > CHUNK_BYTES * CHUNKS // 2, f"released only {released / 2**20:.1f} MiB"
    assert reports == [(released, reports[0][1])]
    assert 0 < reports[0][1] < 1.0
    assert len(kept) == CHUNKS // 64


def test_resident_bytes_reads_this_process() -> None:
    before = resident_bytes()
    ballast = bytearray(64 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    after = resident_bytes()

    assert before is not None and after is not None
    assert after - before >= 60 * 2**20
