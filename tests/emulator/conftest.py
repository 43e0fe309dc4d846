"""Fixtures for the Graph emulator tests: one real server per session, reset before each test.

Every test talks to the emulator over real sockets (uvicorn in a thread), never through a mock
transport, so what is pinned here is what a real client sees on the wire.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from pipeline.emulator import EmulatorConfig, RunningEmulator, serve_in_thread

# kiota-abstractions 1.16 warns (DeprecationWarning, in a class body) when this module is first
# imported, which msgraph's request builders do; pytest turns warnings into errors, so import it
# once here with that one warning silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "GetQueryParameters is deprecated", DeprecationWarning)
    importlib.import_module("kiota_abstractions.default_query_parameters")

TOKEN = "emulator-token"
MAILBOX = "sender@contoso.test"
CHUNK = 4 * 320 * 1024  # a multiple of 320 KiB, as OneDrive demands and Outlook tolerates

MessageFactory = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def running() -> Iterator[RunningEmulator]:
    """The emulator server, shared by the whole session (starting uvicorn costs ~50 ms)."""
    with serve_in_thread(EmulatorConfig()) as server:
        yield server


@pytest.fixture
def emu(running: RunningEmulator) -> RunningEmulator:
    """The shared server with default config and no state, as if freshly started."""
    running.emulator.update_config(EmulatorConfig().model_dump())
    running.emulator.reset()
    return running


@pytest.fixture
async def graph(emu: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for Graph calls: base URL ``.../v1.0``, the emulator's bearer token."""
    async with httpx.AsyncClient(
        base_url=emu.base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
async def plain(emu: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client without credentials, for upload URLs and control endpoints."""
    async with httpx.AsyncClient(base_url=emu.root_url, timeout=30) as client:
        yield client


@pytest.fixture
def new_message() -> MessageFactory:
    """Build a Graph ``message`` JSON tagged with ``x-mailpipe-correlation``."""

    def build(correlation: str = "corr-1", **overrides: Any) -> dict[str, Any]:
        message: dict[str, Any] = {
            "subject": f"Subject {correlation}",
            "body": {"contentType": "HTML", "content": f"<p>Body of {correlation}</p>"},
            "toRecipients": [{"emailAddress": {"address": "rcpt@example.test", "name": "Rcpt"}}],
            "internetMessageHeaders": [{"name": "x-mailpipe-correlation", "value": correlation}],
        }
        message.update(overrides)
        return message

    return build


def error_code(response: httpx.Response) -> str:
    """The Graph error code of an error response."""
    code: str = response.json()["error"]["code"]
    return code


@pytest.fixture
def code_of() -> Callable[[httpx.Response], str]:
    """Expose :func:`error_code` to test modules without importing conftest."""
    return error_code
