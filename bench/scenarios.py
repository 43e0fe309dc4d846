"""mailpipe scenarios: throughput, latency, realistic-graph (each returns a JSON-ready dict)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.load import Load, emails, percentiles
from bench.profile import Profiler
from bench.stack import Stack

__all__ = ["UNTHROTTLED", "drive", "generous", "latency", "realistic_graph", "throughput"]

UNTHROTTLED = {"mailbox_max_concurrency": None, "mailbox_requests_per_window": None}


def generous(mailboxes: int) -> dict[str, Any]:
    """Mailpipe's own limiter out of the way: high rate, burst and concurrency per mailbox."""
    return {
        "mailbox_rate_per_s": 10_000,
        "mailbox_burst": 10_000,
        "mailbox_max_concurrency": 64,
        "global_rate_per_s": 100_000,
        "global_burst": 10_000,
        "sender_mailboxes": mailboxes,
    }


def _settings(opts: dict[str, Any]) -> dict[str, Any]:
    values = dict(opts)
    values.pop("sender_mailboxes", None)
    return values


async def drive(
    stack: Stack,
    n: int,
    mailboxes: int,
    *,
    rate: float | None,
    timeout_s: float,
    files_url: str | None = None,
    profile_s: float = 0.0,
    warmup: int = 20,
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}-"
    batch = emails(n, run_id, mailboxes, files_url)
    async with Load(stack.vhost.url, stack.settings["database_url"]) as load:
        if warmup:  # first calls import msgraph models, open pools: not steady state
            await load.publish_backlog(emails(warmup, f"warm{run_id}", mailboxes, files_url))
            await load.wait_done(f"bench-warm{run_id}-", warmup, timeout_s)
        monitor = stack.monitor(per_role=True)
        profiler = Profiler(stack) if profile_s else None
        t0 = time.time()
        publishing = load.publish_steady(batch, rate) if rate else load.publish_backlog(batch)
        if profiler:
            profiler.start(profile_s)
        publish_s = await publishing
        counts = await load.wait_done(prefix, n, timeout_s)
        monitor.stop()
        await asyncio.sleep(0.5)
        sent = await load.event_times("sent", prefix)
        backed = await load.event_times("backed_up", prefix)
        published, receipts = load.published, load.receipts
    last_sent = max(sent.values(), default=t0)
    last_backed = max(backed.values(), default=t0)
    cpu = monitor.cpu_seconds()
    cpu["mailpipe"] = round(sum(cpu[role] for role in stack.roles), 3)
    rss = monitor.peak_rss_mb()
    rss["mailpipe"] = round(sum(rss[role] for role in stack.roles), 1)
    done = max(len(backed), 1)
    result: dict[str, Any] = {
        "emails": n,
        "sender_mailboxes": mailboxes,
        "statuses": counts,
        "publish_s": round(publish_s, 2),
        "publish_per_s": round(n / publish_s, 1),
        "sent": len(sent),
        "backed_up": len(backed),
        "sent_per_s": round(len(sent) / max(last_sent - t0, 1e-6), 1),
        "backed_up_per_s": round(len(backed) / max(last_backed - t0, 1e-6), 1),
        "wall_to_backed_up_s": round(last_backed - t0, 2),
        "cpu_s": cpu,
        "mailpipe_cpu_ms_per_email": round(cpu["mailpipe"] * 1000 / done, 2),
        "other_cpu_ms_per_email": {
            k: round(v * 1000 / done, 2) for k, v in cpu.items() if k in ("broker", "postgres", "emulator")
        },
        "peak_rss_mb": rss,
        "rss_series_mb": monitor.rss_series_mb(stack.roles),
        "warmup_emails": warmup,
        "latency": {
            "publish_to_receipt": percentiles([receipts[k] - published[k] for k in receipts if k in published]),
            "publish_to_sent": percentiles([sent[k] - published[k] for k in sent if k in published]),
            "publish_to_backed_up": percentiles([backed[k] - published[k] for k in backed if k in published]),
        },
        "errors_in_logs": stack.logs_tail(),
    }
    if profiler:
        result["profile"] = profiler.finish()
    return result


def throughput(db: str, n: int, mailboxes: int = 8, profile_s: float = 0.0, timeout_s: float = 1800) -> dict[str, Any]:
    limits = generous(mailboxes)
    with Stack(db, emulator_config=UNTHROTTLED, settings=_settings(limits)) as stack:
        stack.start_roles()
        result = asyncio.run(drive(stack, n, mailboxes, rate=None, timeout_s=timeout_s, profile_s=profile_s))
        result["emulator"] = _trim(stack.emulator.stats_totals())
        result["settings"] = limits
        return result


def latency(db: str, rate: float = 50.0, duration_s: float = 60.0, mailboxes: int = 8) -> dict[str, Any]:
    n = int(rate * duration_s)
    limits = generous(mailboxes)
    with Stack(db, emulator_config=UNTHROTTLED, settings=_settings(limits)) as stack:
        stack.start_roles()
        result = asyncio.run(drive(stack, n, mailboxes, rate=rate, timeout_s=duration_s + 600))
        result.update(offered_per_s=rate, duration_s=duration_s, emulator=_trim(stack.emulator.stats_totals()))
        return result


def realistic_graph(
    db: str,
    n: int,
    mailboxes: int = 20,
    rate_per_s: float = 16.0,
    latency_s: float = 0.15,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Emulator throttles like Outlook (4 concurrent, ``rate_per_s`` per mailbox); mailpipe told the same."""
    window_s = 10.0
    emulator = {
        "mailbox_max_concurrency": 4,
        "mailbox_requests_per_window": int(rate_per_s * window_s),
        "mailbox_window_s": window_s,
    }
    # A token bucket admits burst + rate * W calls in any window W, Graph's window admits
    # rate_per_s * W: mailpipe must be told less than Graph allows, or it goes over by design.
    # 97% of the rate with a burst of 2 leaves ~3 calls per 10 s window for late arrivals.
    limits = {
        "mailbox_rate_per_s": round(rate_per_s * 0.97, 3),
        "mailbox_burst": 2,
        "mailbox_max_concurrency": 4,
    }
    with Stack(
        db,
        latency_s=latency_s,
        sent_items_delay_s=0.5,
        emulator_config=emulator,
        settings={**limits, "send_no_attachments_prefetch": 80, "backup_prefetch": 80},
    ) as stack:
        stack.start_roles()
        result = asyncio.run(drive(stack, n, mailboxes, rate=None, timeout_s=timeout_s))
        totals = stack.emulator.stats_totals()
        boxes = totals.get("mailboxes", {})
        requests = int(totals["requests"])
        span = result["wall_to_backed_up_s"]
        allowed = rate_per_s * mailboxes
        result.update(
            emulator_config=emulator,
            mailpipe_limits=limits,
            emulator=_trim(totals),
            graph_requests=requests,
            allowed_requests_per_s=allowed,
            achieved_requests_per_s=round(requests / max(span, 1e-6), 1),
            achieved_over_allowed=round(requests / max(span, 1e-6) / allowed, 3),
            peak_requests_in_1s_any_mailbox=max(
                (b["max_requests_in_any_1s_window"] for b in boxes.values()), default=0
            ),
            # every 429 the emulator answered: over the window, over concurrency, or a call made
            # during a Retry-After pause (answered 429 again)
            http_429=sum(int(totals.get(k, 0)) for k in ("throttled_rate", "throttled_concurrency", "throttled_early")),
        )
        return result


def _trim(totals: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in totals.items() if k != "mailboxes"}
