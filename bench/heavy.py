"""Heavier mailpipe scenarios: attachments by URL, and peak memory against backlog size."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.load import Load, emails
from bench.scenarios import UNTHROTTLED, drive, generous
from bench.stack import Stack

__all__ = ["attachments", "backlog_memory"]


def _limits(mailboxes: int) -> dict[str, Any]:
    values = generous(mailboxes)
    values.pop("sender_mailboxes")
    return values


def attachments(db: str, n: int, mailboxes: int = 8) -> dict[str, Any]:
    """``n`` emails each with one 1-20 MB file by URL; emulator keeps only size and sha256."""
    config = {**UNTHROTTLED, "keep_attachment_bytes": False}
    with Stack(db, emulator_config=config, settings=_limits(mailboxes)) as stack:
        stack.start_roles()
        files_url = f"{stack.emulator.root_url}/_emulator/files"
        result = asyncio.run(drive(stack, n, mailboxes, rate=None, timeout_s=3600, files_url=files_url, warmup=2))
        totals = stack.emulator.stats_totals()
    total_mb = sum(((1 + i % 20) * 2**20 + i) for i in range(n)) / 2**20
    span = result["wall_to_backed_up_s"]
    result.update(
        attachment_mb=round(total_mb, 1),
        mb_per_s=round(total_mb / max(span, 1e-6), 1),
        uploaded_mb=round(totals["uploaded_bytes"] / 2**20, 1),
        attachment_worker_peak_rss_mb=result["peak_rss_mb"].get("send-attachments"),
        emulator={k: v for k, v in totals.items() if k != "mailboxes"},
    )
    return result


async def _drain(stack: Stack, n: int, mailboxes: int, window_s: float | None = None) -> dict[str, Any]:
    """Publish ``n`` with the roles stopped, start them, drain until done or ``window_s`` elapses."""
    run_id = uuid.uuid4().hex[:8]
    async with Load(stack.vhost.url, stack.settings["database_url"]) as load:
        stack.stop_roles()  # the queues exist now; publish the whole backlog with nobody consuming
        publish_s = await load.publish_backlog(emails(n, run_id, mailboxes))
        start = time.time()
        # start_roles waits for the consumers with its own asyncio.run: not on this loop
        await asyncio.to_thread(stack.start_roles)
        monitor = stack.monitor(per_role=True)
        counts = await load.wait_done(f"bench-{run_id}-", n, timeout_s=window_s or 3600)
        monitor.stop()
    span = time.time() - start
    rss = monitor.peak_rss_mb()
    backed_up = counts.get("backed_up", 0)
    return {
        "emails": n,
        "window_s": window_s,
        "finished": backed_up + counts.get("failed", 0) >= n,
        "statuses": counts,
        "backed_up_in_window": backed_up,
        "publish_s": round(publish_s, 1),
        "drain_s_incl_start": round(span, 1),
        "backed_up_per_s": round(backed_up / span, 1),
        "peak_rss_mb": {r: rss[r] for r in stack.roles},
        "cpu_s": monitor.cpu_seconds(),
        "rss_series_mb": monitor.rss_series_mb(stack.roles),
    }


def backlog_memory(
    db: str, small: int, large: int, mailboxes: int = 8, window_s: float | None = None
) -> dict[str, Any]:
    """Peak RSS per role draining a small and a large pre-queued backlog (fresh stack each).

    With ``window_s`` each drain stops after that many seconds (counted from starting the roles),
    so a backlog too large to drain in the time is measured over the same window as the small one;
    whatever grows with the backlog (prefetch, claims, buffers) grows at the start of the drain.
    """
    runs = {}
    for n in (small, large):
        with Stack(db, emulator_config=UNTHROTTLED, settings=_limits(mailboxes)) as stack:
            stack.start_roles()
            runs[f"backlog {n}"] = asyncio.run(_drain(stack, n, mailboxes, window_s))
    small_rss, large_rss = runs[f"backlog {small}"]["peak_rss_mb"], runs[f"backlog {large}"]["peak_rss_mb"]
    growth = {r: round(100 * (large_rss[r] - small_rss[r]) / small_rss[r], 1) for r in small_rss if small_rss[r]}
    return {"window_s": window_s, "runs": runs, "rss_growth_pct_large_vs_small": growth}
