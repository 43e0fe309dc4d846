"""Per-mailbox throttling: concurrency and rate 429s, Retry-After, early calls, statistics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from pipeline.emulator import RunningEmulator

MAILBOX = "busy@contoso.test"
OTHER = "quiet@contoso.test"
Codes = Callable[[httpx.Response], str]


async def test_concurrency_limit_answers_429_with_retry_after(graph, emu: RunningEmulator, code_of: Codes) -> None:
    """Six concurrent calls against a limit of four: two are refused with ApplicationThrottled.

    The first refusal starts a Retry-After pause; the second call, arriving inside it, is refused
    as an early call with the same message and the remaining pause as Retry-After.
    """
    emu.emulator.update_config({"latency_s": 0.3, "mailbox_max_concurrency": 4, "throttle_retry_after_s": 0.5})
    responses = await asyncio.gather(*(graph.get(f"/users/{MAILBOX}/messages") for _ in range(6)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 429, 429]
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        assert code_of(response) == "ApplicationThrottled"
        assert response.json()["error"]["message"] == "Application is over its MailboxConcurrency limit."
        assert 0 < float(response.headers["Retry-After"]) <= 0.5
    assert "0.5" in [r.headers["Retry-After"] for r in refused]
    box = emu.emulator.stats()["mailboxes"][MAILBOX]
    assert (box["max_concurrency_seen"], box["requests"]) == (4, 6)
    assert box["throttled_concurrency"] >= 1
    assert box["throttled_concurrency"] + box["throttled_early"] == 2


async def test_rate_limit_retry_after_and_early_calls(graph, emu: RunningEmulator, code_of: Codes) -> None:
    """Over the window: 429 with Retry-After; calling again too soon is an early call (429 again);
    waiting as told is served and is not early.  Other mailboxes are unaffected."""
    emu.emulator.update_config(
        {"mailbox_requests_per_window": 3, "mailbox_window_s": 0.5, "throttle_retry_after_s": 0.25}
    )
    served = [await graph.get(f"/users/{MAILBOX}/messages") for _ in range(3)]
    assert [r.status_code for r in served] == [200, 200, 200]

    refused = await graph.get(f"/users/{MAILBOX}/messages")
    assert (refused.status_code, code_of(refused)) == (429, "ApplicationThrottled")
    retry_after = float(refused.headers["Retry-After"])
    assert 0.25 <= retry_after <= 0.5

    too_soon = await graph.get(f"/users/{MAILBOX}/messages")
    assert too_soon.status_code == 429
    assert (await graph.get(f"/users/{OTHER}/messages")).status_code == 200

    await asyncio.sleep(float(too_soon.headers["Retry-After"]) + 0.05)
    assert (await graph.get(f"/users/{MAILBOX}/messages")).status_code == 200

    stats = emu.emulator.stats()
    box = stats["mailboxes"][MAILBOX]
    assert (box["throttled_rate"], box["throttled_early"], box["early_calls"]) == (1, 1, 1)
    assert box["requests"] == 6
    assert box["max_requests_in_any_1s_window"] == 6
    assert sum(box["calls_per_second"].values()) == 6
    assert all(abs(second - time.time()) < 30 for second in box["calls_per_second"])
    assert stats["totals"]["requests"] == 7
    assert stats["mailboxes"][OTHER]["throttled_rate"] == 0


async def test_stats_endpoint_matches_python_method(plain, graph, emu: RunningEmulator) -> None:
    """GET /_emulator/stats serves the same document as Emulator.stats()."""
    await graph.get(f"/users/{MAILBOX}/messages")
    over_http = (await plain.get("/_emulator/stats")).json()
    in_process = emu.emulator.stats()
    assert over_http["totals"] == in_process["totals"]
    assert over_http["mailboxes"][MAILBOX]["calls_per_second"] == {
        str(k): v for k, v in in_process["mailboxes"][MAILBOX]["calls_per_second"].items()
    }
