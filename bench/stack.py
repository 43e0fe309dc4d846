"""One running mailpipe: vhost, database, emulator process, migrated schema, a process per role."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika

from bench.infra import TOKEN, Database, Emulator, Proc, Vhost, migrate, start_roles
from bench.procmon import Monitor, broker_pids, postgres_pids

__all__ = ["ROLE_QUEUES", "Stack"]

ROLE_QUEUES = {
    "ingest": "mail.ingest",
    "scheduler": "mail.scheduler.wake",
    "send-no-attachments": "mail.send.no-attachment",
    "send-attachments": "mail.send.attachment",
    "backup": "mail.backup",
}
ROLES = tuple(ROLE_QUEUES)


async def wait_for_consumers(amqp_url: str, queues: list[str], timeout_s: float = 90.0) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        deadline = time.monotonic() + timeout_s
        pending = list(queues)
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no consumer on {pending} after {timeout_s}s")
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(pending[0], passive=True)
                if queue.declaration_result.consumer_count:
                    pending.pop(0)
                    continue
            except aio_pika.exceptions.ChannelClosed:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()
            await asyncio.sleep(0.3)
    finally:
        await connection.close()


class Stack(contextlib.ExitStack):
    """Enter to build everything; ``settings`` are MAILPIPE_* overrides (lower-case names)."""

    def __init__(
        self,
        db: str,
        *,
        latency_s: float = 0.0,
        sent_items_delay_s: float = 0.0,
        emulator_config: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.db_kind = db
        self.latency_s = latency_s
        self.sent_items_delay_s = sent_items_delay_s
        self.emulator_config = emulator_config or {}
        self.overrides = settings or {}
        self.roles: dict[str, Proc] = {}

    def __enter__(self) -> Stack:
        super().__enter__()
        try:
            self.workdir = Path(self.enter_context(tempfile.TemporaryDirectory(prefix="mailpipe-bench-")))
            self.vhost = self.enter_context(Vhost())
            self.database = self.enter_context(Database(self.db_kind, self.workdir))
            self.emulator = Emulator(self.workdir, self.latency_s, self.sent_items_delay_s)
            self.callback(self.emulator.stop)
            if self.emulator_config:
                self.emulator.configure(**self.emulator_config)
            self.settings: dict[str, Any] = {
                "amqp_url": self.vhost.url,
                "database_url": self.database.url,
                "graph_base_url": self.emulator.base_url,
                "graph_static_token": TOKEN,
                "graph_sent_lookup_interval_s": 0.25,
                "graph_sent_lookup_deadline_s": 30,
                "graceful_timeout_s": 5,
                **self.overrides,
            }
            migrate(self.settings, self.workdir)
            self.callback(self.stop_roles)
        except BaseException:
            self.close()
            raise
        return self

    def start_roles(self, roles: tuple[str, ...] = ROLES) -> None:
        self.roles = start_roles(roles, self.settings, self.workdir)
        asyncio.run(wait_for_consumers(self.vhost.url, [ROLE_QUEUES[r] for r in roles]))

    def stop_roles(self) -> None:
        for proc in self.roles.values():  # SIGTERM all first: each drains gracefully in parallel
            if proc.alive():
                proc.popen.terminate()
        for proc in self.roles.values():
            proc.stop()
        self.roles = {}

    def monitor(self, *, per_role: bool = False) -> Monitor:
        """Groups: mailpipe (or each role), broker, postgres (when used), emulator."""
        groups: dict[str, list[int]] = {}
        if per_role:
            groups.update({role: [p.pid] for role, p in self.roles.items()})
        else:
            groups["mailpipe"] = [p.pid for p in self.roles.values()]
        groups["broker"] = broker_pids()
        if self.db_kind == "postgresql":
            groups["postgres"] = postgres_pids()
        groups["emulator"] = [self.emulator.proc.pid]
        return Monitor(groups).start()

    def logs_tail(self, lines: int = 5) -> dict[str, list[str]]:
        out = {}
        for log in sorted(self.workdir.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            errors = [t for t in text if '"error"' in t or "Traceback" in t or "ERROR" in t]
            out[log.stem] = errors[-lines:]
        return out
