"""The moving parts of one benchmark run: vhost, database, emulator process, role processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import tracemem

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TOKEN = "bench-token"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass
class Vhost:
    """A RabbitMQ vhost of its own, so queues from other runs never mix in."""

    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Vhost:
        _rabbitmqctl("add_vhost", self.name)
        _rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            _rabbitmqctl("delete_vhost", self.name)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:5672/{self.name}"


@dataclass
class Database:
    """A fresh SQLite file or PostgreSQL database; ``url`` is mailpipe's, ``sync_url`` a plain one."""

    kind: str
    workdir: Path
    name: str = field(default_factory=lambda: f"bench_{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> Database:
        if self.kind == "postgresql":
            asyncio.run(self._pg(f'CREATE DATABASE "{self.name}"'))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "postgresql":
            with contextlib.suppress(Exception):
                asyncio.run(self._pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    @staticmethod
    async def _pg(sql: str) -> None:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    @property
    def url(self) -> str:
        if self.kind == "postgresql":
            return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.name}"
        return f"sqlite+aiosqlite:///{self.workdir / (self.name + '.db')}"

    @property
    def plain_url(self) -> str:
        """For the Celery peer: psycopg conninfo or a sqlite file path."""
        if self.kind == "postgresql":
            return f"postgresql://postgres@127.0.0.1:5432/{self.name}"
        return str(self.workdir / (self.name + "-celery.db"))


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        handle = log.open("ab")
        self.popen = subprocess.Popen(list(args), env=dict(env), stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
        handle.close()
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILPIPE_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


class Emulator:
    """``python -m pipeline graph-emulator`` as its own process, configured over HTTP."""

    def __init__(self, workdir: Path, latency_s: float, sent_items_delay_s: float) -> None:
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1.0"
        args = [
            sys.executable,
            "-m",
            "pipeline",
            "graph-emulator",
            "--port",
            str(self.port),
            "--token",
            TOKEN,
            "--latency-s",
            str(latency_s),
            "--sent-items-delay-s",
            str(sent_items_delay_s),
        ]
        self.proc = Proc("emulator", args, base_env(), workdir / "emulator.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.root_url}/_emulator/config", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"emulator did not start; see {self.proc.log}")

    def configure(self, **patch: Any) -> dict[str, Any]:
        response = httpx.post(f"{self.root_url}/_emulator/config", content=json.dumps(patch), timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def stats_totals(self) -> dict[str, Any]:
        stats = httpx.get(f"{self.root_url}/_emulator/stats", timeout=120).json()
        totals = dict(stats["totals"])
        totals["duplicate_sends"] = sum(1 for n in stats["sends_by_correlation"].values() if n > 1)
        totals["mailboxes"] = {
            name: {k: v for k, v in box.items() if k != "calls_per_second"} for name, box in stats["mailboxes"].items()
        }
        return totals

    def stop(self) -> None:
        self.proc.stop()


def mailpipe_env(settings: Mapping[str, object]) -> dict[str, str]:
    env = base_env()
    env.update({f"MAILPIPE_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("MAILPIPE_LOG_FORMAT", "json")
    env.setdefault("MAILPIPE_LOG_LEVEL", "WARNING")
    env.setdefault("MAILPIPE_HTTP_PORT", "0")
    return env


def migrate(settings: Mapping[str, object], workdir: Path) -> None:
    with (workdir / "migrate.log").open("ab") as log:
        subprocess.run(
            [sys.executable, "-m", "pipeline", "db", "upgrade"],
            env=mailpipe_env(settings),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=120,
        )


def _role_command(role: str) -> list[str]:
    """``python -m pipeline run --role ROLE``, under tracemalloc when ``BENCH_TRACE_MEMORY`` names it."""
    args = ["run", "--role", role]
    if role not in os.environ.get("BENCH_TRACE_MEMORY", "").split(","):
        return [sys.executable, "-m", "pipeline", *args]
    directory = RESULTS / os.environ["BENCH_TRACE_MEMORY_DIR"] / f"{role}-{time.strftime('%H%M%S')}"
    interval_s = float(os.environ.get("BENCH_TRACE_MEMORY_INTERVAL_S", "60"))
    return tracemem.traced_command(sys.executable, args, directory, interval_s)


def start_roles(roles: Sequence[str], settings: Mapping[str, object], workdir: Path) -> dict[str, Proc]:
    """One OS process per role, as one Deployment per role would run them."""
    env = mailpipe_env(settings)
    return {role: Proc(role, _role_command(role), env, workdir / f"{role}.log") for role in roles}
