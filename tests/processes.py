"""Run mailpipe roles as real OS processes, so tests can SIGKILL them mid-work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline.settings import Settings
from tests.support import EMULATOR_TOKEN

ROOT = Path(__file__).resolve().parents[1]


def role_env(settings: Mapping[str, object]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")}
    env.update({f"MAILPIPE_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("MAILPIPE_LOG_FORMAT", "json")
    env.setdefault("MAILPIPE_HTTP_PORT", "0")  # a free port each: several roles run side by side
    env["PYTHONPATH"] = str(ROOT)
    return env


def worker_env(settings: Settings) -> dict[str, object]:
    """The settings a role process needs from a whole-pipeline test's ``settings``."""
    keys = (
        "amqp_url",
        "database_url",
        "graph_base_url",
        "graph_sent_lookup_deadline_s",
        "graph_sent_lookup_interval_s",
        "retry_base_delay_s",
        "retry_max_delay_s",
        "mailbox_rate_per_s",
        "mailbox_burst",
    )
    env: dict[str, object] = {key: getattr(settings, key) for key in keys}
    env["graph_static_token"] = EMULATOR_TOKEN
    return env


class RoleProcess:
    """One ``mailpipe run --role ...`` process; its output goes to ``log_path``."""

    def __init__(self, roles: Sequence[str], settings: Mapping[str, object], log_path: Path) -> None:
        self.roles = list(roles)
        self.settings = dict(settings)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RoleProcess:
        args = [sys.executable, "-m", "pipeline", "run"]
        for role in self.roles:
            args += ["--role", role]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, env=role_env(self.settings), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful drain, exactly like an OOM kill or a node loss."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@contextmanager
def role_processes(*processes: RoleProcess) -> Iterator[tuple[RoleProcess, ...]]:
    for process in processes:
        process.start()
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
