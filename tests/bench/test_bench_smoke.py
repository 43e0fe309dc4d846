"""The benchmark harness still works: a ~30-email throughput run on SQLite through ``bench.runner``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import tracemem
from bench.runner import run_scenario

EXPECTED = {
    "emails",
    "publish_per_s",
    "sent_per_s",
    "backed_up_per_s",
    "cpu_s",
    "mailpipe_cpu_ms_per_email",
    "other_cpu_ms_per_email",
    "peak_rss_mb",
    "rss_series_mb",
    "latency",
    "emulator",
    "statuses",
}


@pytest.mark.timeout(90)
def test_throughput_smoke() -> None:
    started = time.monotonic()
    document = run_scenario("throughput", "sqlite", write=False, emails=30, mailboxes=2)
    elapsed = time.monotonic() - started
    assert {"scenario", "db", "machine", "result"} <= document.keys()
    assert {"cpu_cores_logical", "memory_gb", "python", "rabbitmq", "postgresql"} <= document["machine"].keys()
    result = document["result"]
    assert result.keys() >= EXPECTED
    assert result["backed_up"] == 30
    assert result["emulator"]["duplicate_sends"] == 0
    assert {"mailpipe", "broker", "emulator"} <= result["cpu_s"].keys()
    assert elapsed < 60, f"the smoke run took {elapsed:.0f}s"


@pytest.mark.timeout(60)
def test_graph_calls_smoke() -> None:
    document = run_scenario("graph-calls", "sqlite", write=False, emails=5)

    runs = document["result"]["runs"]
    assert runs.keys() == {
        f"{client}, {concurrency} at a time"
        for client in ("mailpipe (msgraph-sdk)", "plain httpx")
        for concurrency in (1, 16)
    }
    for run in runs.values():
        assert run["client_cpu_ms_per_call"].keys() == {"sendMail", "find in Sent Items", "$value"}
        assert all(ms > 0 for ms in run["client_cpu_ms_per_call"].values())
        assert run["other_cpu_ms_per_email"]["emulator"] > 0


@pytest.mark.timeout(90)
def test_traced_role_writes_snapshots_whose_growth_can_be_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_TRACE_MEMORY", "scheduler")
    monkeypatch.setenv("BENCH_TRACE_MEMORY_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_TRACE_MEMORY_INTERVAL_S", "1")

    document = run_scenario("throughput", "sqlite", write=False, emails=10, mailboxes=1)

    assert document["result"]["backed_up"] == 10
    (traced,) = tmp_path.iterdir()
    assert traced.name.startswith("scheduler-")
    snapshots = sorted(traced.glob("*.snap"))
    assert len(snapshots) >= 2  # at least one by the clock and one at exit
    grown = tracemem.growth(snapshots[0], snapshots[-1], top=5)
    assert len(grown) == 5
    assert all(entry["where"] and isinstance(entry["grew_kib"], float) for entry in grown)
    series = document["result"]["rss_series_mb"]
    assert series.keys() == {"ingest", "scheduler", "send-no-attachments", "send-attachments", "backup"}
    for points in series.values():  # from the start to the end of the run, RSS in MB
        assert len(points) >= 2
        assert points[0][0] < points[-1][0]
        assert all(mb > 10 for _, mb in points)
