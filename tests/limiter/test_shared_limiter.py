"""The shared limiter's guarantees across limiter instances and across OS processes.

Limits under test (tests/limiter/conftest.py): 20 calls/s per mailbox, burst 5, 3 at a time.
A token bucket lets through at most ``rate * window + burst`` calls in any window.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.cli.limits import change_limits
from pipeline.limiter import SharedLimiter
from tests.limiter.conftest import LIMITS, MakeLimiter, limiter_settings
from tests.limiter.measure import max_in_window, max_overlap, run_calls

ROOT = Path(__file__).resolve().parents[2]
RATE = LIMITS["mailbox_rate_per_s"]
BURST = LIMITS["mailbox_burst"]
CAP = LIMITS["mailbox_max_concurrency"]
#: Limited by its rate: short calls, so 3 at a time would allow far more than 20/s.
MAILBOX = "Sender@Contoso.example"
#: Limited by concurrency: a row with a huge rate, and calls of 0.1 s.
WIDE = "wide@contoso.example"
JOBS: list[dict[str, Any]] = [
    {"mailbox": MAILBOX, "workers": 4, "call_s": 0.02},
    {"mailbox": WIDE, "workers": 4, "call_s": 0.1},
]


async def _open_wide_mailbox(database_url: str) -> None:
    await change_limits(limiter_settings(database_url), WIDE, rate_per_s=1000.0, burst=100)


def _check(label: str, runs: dict[str, list[list[tuple[float, float]]]], started: float, seconds: float) -> None:
    """Assert the bucket bound on MAILBOX and the cap on WIDE, over every instance's calls.

    ``started`` is a time before MAILBOX's bucket was created (full): no more than ``burst +
    rate * (t - started)`` calls can have entered by time ``t``.
    """
    rated = [i for run in runs[MAILBOX] for i in run]
    entered = [e for e, _ in rated]
    window = max_in_window(entered, 1.0)
    expected = RATE * seconds + BURST
    overlaps = {mailbox: max_overlap([i for run in runs[mailbox] for i in run]) for mailbox in runs}
    wide = sum(len(run) for run in runs[WIDE])
    span = max(entered) - started
    print(
        f"\n{label}: {MAILBOX.lower()}: {len(entered)} calls in {span:.2f}s = {len(entered) / span:.1f}/s, "
        f"bucket allows {BURST + RATE * span:.0f} ({RATE:g}/s + burst {BURST}); "
        f"max in any 1 s window: {window} (bound {RATE + BURST:g}); "
        f"{WIDE}: {wide} calls, max concurrent {overlaps[WIDE]} (cap {CAP}); calls per instance: "
        f"{ {mailbox: [len(run) for run in runs[mailbox]] for mailbox in runs} }"
    )
    assert window <= RATE * 1.0 + BURST
    assert len(entered) <= BURST + RATE * (max(entered) - started)
    assert len(entered) >= 0.6 * expected, "the limiter starved the callers"
    assert all(overlap <= CAP for overlap in overlaps.values())
    assert overlaps[WIDE] == CAP, "the concurrency cap was never reached: the test proves nothing"
    assert all(runs[mailbox][i] for mailbox in runs for i in range(len(runs[mailbox]))), "an instance starved"


async def test_instances_share_one_bucket_and_one_concurrency_cap(make_limiter: MakeLimiter, database_url: str) -> None:
    # Given three limiter instances (each its own engine, like three processes)
    await _open_wide_mailbox(database_url)
    limiters = [await make_limiter() for _ in range(3)]
    seconds = 1.5
    started = time.time()
    until = started + seconds
    # When each runs callers back to back on both mailboxes for 1.5 seconds
    tasks = {
        (job["mailbox"], n): asyncio.create_task(
            run_calls(limiter, job["mailbox"], workers=job["workers"], until=until, call_s=job["call_s"])
        )
        for job in JOBS
        for n, limiter in enumerate(limiters)
    }
    await asyncio.gather(*tasks.values())
    runs: dict[str, list[list[tuple[float, float]]]] = {}
    for (mailbox, _), task in tasks.items():
        runs.setdefault(mailbox, []).append(task.result())
    # Then together they stay inside one bucket and one concurrency cap, and use most of the rate
    _check("3 instances", runs, started, seconds)


async def test_separate_os_processes_share_the_limits(database_url: str) -> None:
    # Given three worker processes started together, each calling both mailboxes for three seconds
    await _open_wide_mailbox(database_url)
    seconds = 3.0
    config = {"database_url": database_url, "mode": "calls", "limits": LIMITS, "jobs": JOBS}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.limiter.worker_process", json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for process in processes:
        assert process.stdout is not None
        assert (await asyncio.to_thread(process.stdout.readline)).strip() == "ready"
    start_at = time.time() + 0.2
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(f"{start_at} {start_at + seconds}\n")
        process.stdin.flush()
    outputs = [await asyncio.to_thread(p.communicate, timeout=30) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0]
    # Then the calls of all processes together respect one bucket and one cap
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    runs = {job["mailbox"]: [[tuple(i) for i in r[job["mailbox"]]] for r in results] for job in JOBS}
    _check("3 OS processes", runs, start_at, seconds)


async def test_a_429_in_one_instance_pauses_the_others(make_limiter: MakeLimiter) -> None:
    # Given instance B busy on the mailbox
    a, b = await make_limiter(), await make_limiter()
    pause = 1.0
    busy = asyncio.create_task(run_calls(b, MAILBOX, workers=2, until=time.time() + 2.1, call_s=0.005))
    await asyncio.sleep(0.3)
    # When instance A reports a 429 with Retry-After 1 s, and asks for a slot itself
    before = time.time()
    await a.report_throttled(MAILBOX.lower(), pause)
    after = time.time()
    a_entered = asyncio.create_task(_enter(a))
    intervals = await busy
    # Then B, busy before, grants nothing from just after the report until the pause has passed
    # (0.05 s lets a grant committed before the pause reach its caller), and resumes soon after
    during = [e for e, _ in intervals if after + 0.05 <= e < before + pause]
    resumed = min(e for e, _ in intervals if e >= before + pause)
    print(
        f"\npause {pause:g} s: B resumed {resumed - before:.3f}s after the report "
        f"(refresh {LIMITS['limiter_refresh_s']}s)"
    )
    assert any(e < before for e, _ in intervals)
    assert during == []
    assert resumed <= before + pause + LIMITS["limiter_refresh_s"] + 0.3
    # And A itself waits out the pause too
    assert await a_entered >= before + pause


async def test_lease_of_a_killed_process_expires(make_limiter: MakeLimiter, database_url: str) -> None:
    # Given a process holding the only slot of a mailbox (cap 1), renewing a 1 s lease
    ttl = 1.0
    config = {
        "database_url": database_url,
        "mailbox": MAILBOX,
        "mode": "hold",
        "limits": {**LIMITS, "mailbox_max_concurrency": 1},
        "lease_ttl_s": ttl,
    }
    with subprocess.Popen(
        [sys.executable, "-m", "tests.limiter.worker_process", json.dumps(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "held"
            limiter = await make_limiter(mailbox_max_concurrency=1)
            # Then, while it lives, its renewed lease keeps the slot beyond one TTL
            waiting = asyncio.create_task(_enter(limiter))
            done, _ = await asyncio.wait({waiting}, timeout=ttl + 0.3)
            assert not done, "a slot was granted while the holder was alive"
            # When the holder is SIGKILLed (no release, no goodbye)
            os.kill(holder.pid, signal.SIGKILL)
            killed = time.time()
            entered = await asyncio.wait_for(waiting, timeout=ttl + 2.0)
        finally:
            holder.kill()
    # Then the slot is granted once the lease has expired
    print(f"\nkilled holder's lease freed after {entered - killed:.2f}s (ttl {ttl}s)")
    assert entered - killed <= ttl + 0.5


async def _enter(limiter: SharedLimiter) -> float:
    async with limiter.slot(MAILBOX):
        return time.time()
