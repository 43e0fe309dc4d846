"""What the emulator saw, for tests and benchmarks to assert on.

The central figure is ``sends_by_correlation``: how many times each message (keyed by its
``x-mailpipe-correlation`` internet header) was *actually sent*, whatever the client was told.
A value of 2 is a duplicate delivery.  Per mailbox the counters show how well a client respects
Outlook's limits: throttled calls, calls made before a Retry-After expired, peak concurrency and
peak calls in any one-second window.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .models import StoredMessage

__all__ = ["CORRELATION_HEADER", "Stats"]

#: The internet message header mailpipe tags every message with.
CORRELATION_HEADER = "x-mailpipe-correlation"

_COUNTERS = (
    "requests",
    "throttled_rate",
    "throttled_concurrency",
    "throttled_early",
    "early_calls",
    "faults_503",
    "faults_504",
    "sends",
    "uploaded_bytes",
)
_PEAKS = ("max_concurrency_seen", "max_requests_in_any_1s_window")


@dataclass
class _MailboxStats:
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    peaks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PEAKS, 0))
    calls_per_second: dict[int, int] = field(default_factory=dict)
    last_second: deque[float] = field(default_factory=deque)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.counters,
            **self.peaks,
            "calls_per_second": dict(sorted(self.calls_per_second.items())),
        }


class Stats:
    """Thread-safe counters; :meth:`snapshot` is what ``GET /_emulator/stats`` returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._boxes: dict[str, _MailboxStats] = {}
        self._by_correlation: dict[str, int] = {}
        self._sent: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Zero everything."""
        with self._lock:
            self._boxes.clear()
            self._by_correlation.clear()
            self._sent.clear()

    def _box(self, mailbox: str) -> _MailboxStats:
        return self._boxes.setdefault(mailbox, _MailboxStats())

    def record_request(self, mailbox: str, *, mono_now: float, wall_now: float, early: bool) -> None:
        """Count one authenticated Graph call, whatever its outcome."""
        with self._lock:
            box = self._box(mailbox)
            box.counters["requests"] += 1
            box.counters["early_calls"] += int(early)
            second = int(wall_now)
            box.calls_per_second[second] = box.calls_per_second.get(second, 0) + 1
            window = box.last_second
            window.append(mono_now)
            while window[0] <= mono_now - 1.0:
                window.popleft()
            box.peaks["max_requests_in_any_1s_window"] = max(box.peaks["max_requests_in_any_1s_window"], len(window))

    def bump(self, mailbox: str, counter: str, amount: int = 1) -> None:
        """Add to one of the per-mailbox counters (``throttled_rate``, ``faults_503``, ...)."""
        if counter not in _COUNTERS:
            raise KeyError(counter)
        with self._lock:
            self._box(mailbox).counters[counter] += amount

    def record_admitted(self, mailbox: str, in_flight: int) -> None:
        """Track the peak number of concurrent calls the mailbox actually served."""
        with self._lock:
            peaks = self._box(mailbox).peaks
            peaks["max_concurrency_seen"] = max(peaks["max_concurrency_seen"], in_flight)

    def record_send(self, mailbox: str, copy: StoredMessage, *, saved: bool) -> None:
        """Record one message that really went out (even if the client is then told 504)."""
        correlation = copy.header(CORRELATION_HEADER)
        entry = {
            "correlation": correlation,
            "mailbox": mailbox,
            "sent_id": copy.id if saved else None,
            "internet_message_id": copy.internet_message_id,
            "subject": copy.props.get("subject"),
            "attachments": [a.summary() for a in copy.attachments],
        }
        with self._lock:
            self._box(mailbox).counters["sends"] += 1
            self._sent.append(entry)
            if correlation is not None:
                self._by_correlation[correlation] = self._by_correlation.get(correlation, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: per-mailbox figures, totals, and the list of actual sends.

        ``calls_per_second`` is keyed by integer epoch second (JSON turns the keys into strings).
        Totals sum the counters and take the maximum of the peaks.
        """
        with self._lock:
            mailboxes = {name: box.as_dict() for name, box in self._boxes.items()}
            totals: dict[str, int] = dict.fromkeys((*_COUNTERS, *_PEAKS), 0)
            for box in self._boxes.values():
                for name, value in box.counters.items():
                    totals[name] += value
                for name, value in box.peaks.items():
                    totals[name] = max(totals[name], value)
            return {
                "sends_by_correlation": dict(self._by_correlation),
                "sent": [dict(entry) for entry in self._sent],
                "mailboxes": mailboxes,
                "totals": totals,
            }
