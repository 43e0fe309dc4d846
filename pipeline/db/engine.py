"""Engine and session factory, tuned per database.

SQLite is the embedded default and is shared by several processes in the demo and the tests:
WAL lets readers run beside the one writer, ``busy_timeout`` makes a second writer wait
instead of failing, and every transaction starts with ``BEGIN IMMEDIATE`` so two processes
never both read then both try to upgrade to a write lock (the cause of "database is locked"
deadlocks under the default deferred mode).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from pipeline.settings import Settings

__all__ = ["autovacuum_warning", "create_engine", "create_sessionmaker", "server_warnings"]

SQLITE_BUSY_TIMEOUT_MS = 60_000


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the async engine for ``settings.database_url``; the caller disposes of it."""
    if settings.is_sqlite:
        # One connection per process: transactions then queue in asyncio instead of in SQLite's
        # busy handler, which sleeps in steps of up to 100 ms and would dominate latency.
        engine = create_async_engine(
            settings.database_url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "isolation_level": None},
            pool_size=1,
            max_overflow=0,
            pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        _tune_sqlite(engine)
        return engine
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size // 2,
        # No pre-ping: it costs a round trip per transaction (~8 % of a worker's CPU). After a
        # database restart the first statement on each stale connection fails instead; SQLAlchemy
        # then invalidates the whole pool, and the error is a StoreUnavailable (transient) that
        # the caller retries (pipeline.retry.infra_retrying) or settles as a transient failure.
        pool_timeout=120,
        pool_recycle=1800,
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded objects usable after commit (handlers read them afterwards)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def create_statement_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions for a unit of work that is one statement: one write, or reads only.

    On PostgreSQL their connections are in autocommit, so each statement is its own transaction
    and costs one round trip instead of three (BEGIN, the statement, COMMIT); a write is as
    durable and as atomic as before. Two writes in such a session would not be atomic together:
    use ``create_sessionmaker``'s ``begin()`` for those. On SQLite these are ordinary sessions
    (the engine's ``BEGIN IMMEDIATE`` must pair with a COMMIT, and a round trip is a function call).
    """
    if engine.dialect.name != "postgresql":
        return create_sessionmaker(engine)
    return create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))


def autovacuum_warning(setting: str) -> str | None:
    """The warning for PostgreSQL's ``autovacuum`` setting, or None when it is on."""
    if setting.strip().lower() in {"on", "true", "1"}:
        return None
    return (
        "PostgreSQL runs with autovacuum off: every email leaves several dead row versions in "
        "incoming_emails, and without vacuum the scheduler's claims and in-flight counts slow "
        "down as they pile up (bench/HISTORY.md measured 20 ms per claim after 20,000 emails). "
        "Turn autovacuum on, or VACUUM mailpipe's tables regularly."
    )


async def server_warnings(engine: AsyncEngine) -> list[str]:
    """What about the database server will hurt mailpipe; checked once when the scheduler starts."""
    if engine.dialect.name != "postgresql":
        return []
    async with engine.connect() as connection:
        setting = str(await connection.scalar(text("SHOW autovacuum")))
    warning = autovacuum_warning(setting)
    return [warning] if warning else []
