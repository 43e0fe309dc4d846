"""Fault injection (503 before, 504 after a send), seeding, and the control endpoints."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from pipeline.emulator import EmulatorConfig, RunningEmulator

MAILBOX = "sender@contoso.test"
Codes = Callable[[httpx.Response], str]


async def test_503_is_injected_before_anything_happens(graph, emu: RunningEmulator, new_message, code_of: Codes):
    """fail_503_rate=1: ErrorServerBusy with Retry-After: 1, and nothing is sent."""
    emu.emulator.update_config({"fail_503_rate": 1.0})
    response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message("busy")})
    assert (response.status_code, code_of(response)) == (503, "ErrorServerBusy")
    assert response.headers["Retry-After"] == "1"
    again = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message("busy")})
    assert again.status_code == 503
    stats = emu.emulator.stats()
    assert stats["sends_by_correlation"] == {}
    box = stats["mailboxes"][MAILBOX]
    assert (box["faults_503"], box["early_calls"]) == (2, 1)  # the retry ignored Retry-After: 1


async def test_504_after_send_still_counts_as_sent(graph, emu: RunningEmulator, new_message, code_of: Codes):
    """fail_504_after_send_rate=1: the client sees 504 UnknownError, yet the mail went out."""
    emu.emulator.update_config({"fail_504_after_send_rate": 1.0})
    response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message("ghost")})
    assert (response.status_code, code_of(response)) == (504, "UnknownError")

    draft = (await graph.post(f"/users/{MAILBOX}/messages", json=new_message("ghost2"))).json()
    assert draft["isDraft"] is True  # non-send calls are never hit by the 504 injection
    assert (await graph.post(f"/users/{MAILBOX}/messages/{draft['id']}/send")).status_code == 504

    stats = emu.emulator.stats()
    assert stats["sends_by_correlation"] == {"ghost": 1, "ghost2": 1}
    assert stats["mailboxes"][MAILBOX]["faults_504"] == 2
    listing = await graph.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages")
    assert len(listing.json()["value"]) == 2


async def test_seed_makes_faults_reproducible(graph, emu: RunningEmulator) -> None:
    """The same seed gives the same 503 pattern after a reset."""
    patterns = []
    for _ in range(2):
        emu.emulator.update_config({"fail_503_rate": 0.5, "seed": 1234})
        emu.emulator.reset()
        responses = [await graph.get(f"/users/{MAILBOX}/messages") for _ in range(12)]
        patterns.append([r.status_code for r in responses])
    assert patterns[0] == patterns[1]
    assert {200, 503} == set(patterns[0])


async def test_config_endpoint_and_reset(plain, graph, emu: RunningEmulator, new_message, code_of: Codes) -> None:
    """POST /_emulator/config applies a partial update; bad fields are 400; reset clears state."""
    changed = await plain.post("/_emulator/config", json={"latency_s": 0.01, "throttle_retry_after_s": 0.5})
    assert changed.status_code == 200
    assert changed.json()["latency_s"] == 0.01 and changed.json()["static_token"] == "emulator-token"
    assert emu.emulator.config.throttle_retry_after_s == 0.5

    unknown = await plain.post("/_emulator/config", json={"no_such_knob": 1})
    out_of_range = await plain.post("/_emulator/config", json={"fail_503_rate": 2})
    assert (unknown.status_code, out_of_range.status_code) == (400, 400)
    assert (await plain.get("/_emulator/config")).json() == changed.json()

    await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message()})
    assert (await plain.post("/_emulator/reset")).status_code == 200
    assert emu.emulator.stats()["sent"] == []
    assert (await graph.get(f"/users/{MAILBOX}/messages")).json()["value"] == []
    assert emu.emulator.config.latency_s == 0.01  # reset keeps the config


def test_emulator_config_defaults() -> None:
    """The documented defaults: Outlook's 4-call concurrency, 4 MiB requests, no faults."""
    config = EmulatorConfig()
    assert config.static_token == "emulator-token"
    assert config.mailbox_max_concurrency == 4
    assert config.max_request_bytes == 4 * 1024 * 1024
    assert (config.fail_503_rate, config.fail_504_after_send_rate, config.latency_s) == (0.0, 0.0, 0.0)
    assert config.mailbox_requests_per_window is None and config.keep_attachment_bytes is True
