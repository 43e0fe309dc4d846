"""RoleServices.stop: background loops are cancelled, and a stuck one cannot hang the stop."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pipeline.lifecycle as lifecycle
from pipeline.lifecycle import RoleServices


async def test_stop_does_not_wait_forever_for_a_task_that_swallows_its_cancellation(monkeypatch: Any) -> None:
    monkeypatch.setattr(lifecycle, "BACKGROUND_STOP_TIMEOUT_S", 0.2)
    release = asyncio.Event()

    async def stubborn() -> None:  # what aiormq's RPC did in CI: cancelled, it kept waiting
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    async def obedient() -> None:
        await asyncio.sleep(3600)

    services = RoleServices(SimpleNamespace(http_server=None), ())  # type: ignore[arg-type]
    stuck, loop_task = asyncio.create_task(stubborn()), asyncio.create_task(obedient())
    services._tasks.extend([stuck, loop_task])
    await asyncio.sleep(0)

    started = time.monotonic()
    await services.stop()

    assert time.monotonic() - started < 2.0
    assert loop_task.cancelled()
    assert not stuck.done()
    release.set()  # what closing the sampler's connection does for the real task
    await stuck
