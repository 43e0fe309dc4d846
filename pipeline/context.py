"""What every step needs, built once by :func:`pipeline.app.create_app` and passed in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from faststream.rabbit import RabbitBroker
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pipeline.messaging import Bus
from pipeline.settings import Settings

if TYPE_CHECKING:
    import httpx

    from pipeline.crypto import KeyRing
    from pipeline.graph import GraphMailer
    from pipeline.observability.http import HealthServer
    from pipeline.observability.metrics import Metrics
    from pipeline.observability.tracing import Tracing
    from pipeline.steps.scheduler import Scheduler

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """The wired application: settings plus the clients built from them.

    Steps receive this object instead of importing globals, so tests build one per case.
    Role-specific clients (the Graph mailer, the download client, the scheduler loop) are
    started by :class:`pipeline.lifecycle.RoleServices` only for roles that use them.
    """

    settings: Settings
    broker: RabbitBroker
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: For a unit of work that is a single statement (see ``create_statement_sessionmaker``).
    statement_sessions: async_sessionmaker[AsyncSession]
    bus: Bus
    worker_name: str
    keyring: KeyRing | None = None
    mailer: GraphMailer | None = None
    download_client: httpx.AsyncClient | None = None
    scheduler: Scheduler | None = None
    metrics: Metrics | None = None
    tracing: Tracing | None = None
    http_server: HealthServer | None = None

    def require_mailer(self) -> GraphMailer:
        if self.mailer is None:
            raise RuntimeError("this process runs no Graph role; the mailer was not started")
        return self.mailer

    def require_download_client(self) -> httpx.AsyncClient:
        if self.download_client is None:
            raise RuntimeError("this process runs no attachment role; the download client was not started")
        return self.download_client
