"""A local, faithful Microsoft Graph mail emulator for tests, demos and benchmarks.

It speaks the slice of Graph mailpipe uses — ``sendMail``, drafts, attachments, upload sessions,
``/send``, Sent Items look-ups, ``$value`` — with Graph's status codes, error bodies and quirks
(new id after send, 202 without a body, pre-authenticated upload URLs that reject a bearer
token, per-mailbox throttling with fractional Retry-After), and it injects the failures that make
sending hard: 503s, and 504s after the mail really went out.  ``GET /_emulator/stats`` then says
how many times each message was actually sent.

Usage::

    with serve_in_thread(EmulatorConfig(latency_s=0.05)) as running:
        ...  # point the Graph client at running.base_url, token "emulator-token"
        running.emulator.stats()["sends_by_correlation"]
"""

from __future__ import annotations

from .app import create_app
from .config import EmulatorConfig
from .emulator import Emulator
from .files import expected_file_sha256, file_chunks
from .server import RunningEmulator, run, serve_in_thread
from .stats import CORRELATION_HEADER

__all__ = [
    "CORRELATION_HEADER",
    "Emulator",
    "EmulatorConfig",
    "RunningEmulator",
    "create_app",
    "expected_file_sha256",
    "file_chunks",
    "run",
    "serve_in_thread",
]
