"""The benchmark harness still works: a ~30-email throughput run on SQLite through ``bench.runner``."""

from __future__ import annotations

import time

import pytest

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
