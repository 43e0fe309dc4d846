"""``run_scenario``: run one scenario, add the machine, print a table, write the JSON result."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench import graphcalls, heavy, peers, scenarios
from bench.infra import RESULTS

__all__ = ["SCENARIOS", "machine", "run_scenario"]

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "throughput": lambda db, o: scenarios.throughput(db, o["emails"] or 2000, o["mailboxes"] or 8, o["profile"]),
    "latency": lambda db, o: scenarios.latency(db, o["rate"], o["duration"], o["mailboxes"] or 8),
    "realistic-graph": lambda db, o: scenarios.realistic_graph(db, o["emails"] or 1500, o["mailboxes"] or 20),
    "attachments": lambda db, o: heavy.attachments(db, o["emails"] or 200),
    "backlog-memory": lambda db, o: heavy.backlog_memory(db, o["small"], o["emails"] or 10_000, window_s=o["window"]),
    "floor": lambda db, o: peers.floor(o["emails"] or 2000),
    "celery": lambda db, o: peers.celery(db, o["emails"] or 2000, o["mailboxes"] or 8),
    "graph-calls": lambda db, o: graphcalls.graph_calls(o["emails"] or 1000),
}


def _first_line_of(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        return out.splitlines()[0] if out else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _postgres_setting(name: str) -> str:
    return _first_line_of(["psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", f"SHOW {name}"])


def machine() -> dict[str, Any]:
    return {
        "cpu_cores_logical": psutil.cpu_count(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "rabbitmq": _first_line_of(["rabbitmqctl", "-q", "version"]),
        "postgresql": _postgres_setting("server_version"),
        # This machine's CI configuration turns it off; it changes PostgreSQL's cost at 20,000 emails.
        "postgresql_autovacuum": _postgres_setting("autovacuum"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _row(result: dict[str, Any]) -> list[tuple[str, str]]:
    keys = (
        "emails",
        "publish_per_s",
        "sent_per_s",
        "backed_up_per_s",
        "backed_up_in_window",
        "drain_s_incl_start",
        "relay_per_s",
        "mailpipe_cpu_ms_per_email",
        "cpu_ms_per_email",
        "achieved_over_allowed",
        "http_429",
        "mb_per_s",
        "calls_each",
        "client_cpu_ms_per_email",
    )
    rows = [(k, str(result[k])) for k in keys if k in result]
    for name, figures in result.get("latency", {}).items():
        if figures.get("n"):
            rows.append((name, f"p50 {figures['p50_ms']} / p95 {figures['p95_ms']} / p99 {figures['p99_ms']} ms"))
    rows.extend(
        (key, ", ".join(f"{k} {v}" for k, v in result[key].items()))
        for key in ("client_cpu_ms_per_call", "cpu_s", "peak_rss_mb", "other_cpu_ms_per_email")
        if key in result
    )
    rows.extend(
        (f"RSS MB of {role} over the run", _quarters(points))
        for role, points in result.get("rss_series_mb", {}).items()
    )
    return rows


def _quarters(points: list[list[float]]) -> str:
    """RSS at the start, each quarter of the run and the end: a plateau or a slope at a glance."""
    picks = [points[round(i * (len(points) - 1) / 4)] for i in range(5)] if points else []
    return " -> ".join(f"{mb} ({t:.0f} s)" for t, mb in picks)


def print_table(scenario: str, db: str, result: dict[str, Any]) -> None:
    runs = result.get("runs", {"": result})
    print(f"\n== {scenario} ({db}) ==")
    for label, run in runs.items():
        if label:
            print(f"-- {label}")
        rows = _row(run)
        width = max((len(k) for k, _ in rows), default=10)
        for key, value in rows:
            print(f"  {key.ljust(width)}  {value}")
    if "rss_growth_pct_large_vs_small" in result:
        growth = result["rss_growth_pct_large_vs_small"]
        print("-- peak RSS growth, large vs small backlog (%): " + ", ".join(f"{k} {v}" for k, v in growth.items()))


def run_scenario(scenario: str, db: str = "sqlite", *, write: bool = True, **options: Any) -> dict[str, Any]:
    """Run ``scenario`` on ``db``; options: emails, mailboxes, rate, duration, small, window, profile."""
    opts: dict[str, Any] = {
        "emails": None,
        "mailboxes": None,
        "rate": 50.0,
        "duration": 60.0,
        "small": 1000,
        "window": None,
        "profile": 0.0,
        **options,
    }
    started = time.time()
    info = machine()
    result = SCENARIOS[scenario](db, opts)
    document = {
        "scenario": scenario,
        "db": db,
        "started_at": started,
        "elapsed_s": round(time.time() - started, 1),
        "machine": info,
        "options": opts,
        "result": result,
    }
    print_table(scenario, db, result)
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(started))
        path = RESULTS / f"{scenario}-{db}-{stamp}.json"
        path.write_text(json.dumps(document, indent=2, default=str))
        document["path"] = str(path)
        print(f"\nwritten {path}")
    return document
