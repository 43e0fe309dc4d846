"""The :class:`Emulator`: every piece of state of one emulator instance, in one object.

``create_app`` builds one per app and hangs it on ``app.state.emulator``; nothing lives at module
level, so two emulators in one process (or one per test) never share anything.  The object is
also the Python face of the control endpoints: tests running the server in a thread may call
:meth:`stats`, :meth:`reset` and :meth:`update_config` directly.
"""

from __future__ import annotations

import threading
from typing import Any

from .config import EmulatorConfig
from .faults import FaultInjector
from .models import StoredMessage
from .stats import Stats
from .store import MailStore
from .throttle import Throttle
from .uploads import UploadSessions

__all__ = ["Emulator"]


class Emulator:
    """Mail store, upload sessions, throttle, fault injector and statistics of one instance."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or EmulatorConfig()
        self.store = MailStore()
        self.uploads = UploadSessions()
        self.throttle = Throttle()
        self.recorder = Stats()
        self.faults = FaultInjector(self._config.seed)
        self._file_failures: dict[str, int] = {}

    @property
    def config(self) -> EmulatorConfig:
        """The current configuration (an immutable snapshot)."""
        return self._config

    def update_config(self, patch: dict[str, Any]) -> EmulatorConfig:
        """Apply a partial update and return the new config; state is kept.

        Raises ``pydantic.ValidationError`` for unknown fields or bad values.  A changed ``seed``
        restarts the fault sequence.
        """
        with self._lock:
            new = self._config.updated(patch)
            if "seed" in patch:
                self.faults.reseed(new.seed)
            self._config = new
            return new

    def reset(self) -> None:
        """Clear mailboxes, upload sessions, throttling state and stats; keep the config."""
        with self._lock:
            self.store.reset()
            self.uploads.reset()
            self.throttle.reset()
            self.recorder.reset()
            self.faults.reseed(self._config.seed)
            self._file_failures.clear()

    def stats(self) -> dict[str, Any]:
        """The same JSON document as ``GET /_emulator/stats``."""
        return self.recorder.snapshot()

    def send(self, upn: str, message: StoredMessage, *, stored: bool, save: bool = True) -> StoredMessage:
        """Send ``message`` (a stored draft, or a ``sendMail`` message) and record the send.

        Returns the Sent Items copy, which is only kept when ``save``.
        """
        copy = self.store.send(upn, message, stored=stored, save=save, delay_s=self._config.sent_items_delay_s)
        self.recorder.record_send(upn.lower(), copy, saved=save)
        return copy

    def should_fail_file(self, key: str, fail_first: int) -> bool:
        """Whether this download of file ``key`` is one of its first ``fail_first`` (-> 503)."""
        with self._lock:
            served = self._file_failures.get(key, 0)
            if served >= fail_first:
                return False
            self._file_failures[key] = served + 1
            return True
