"""Alembic environment: runs migrations on the async engine built from mailpipe's settings."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

import pipeline.db.limiter_models  # noqa: F401  (adds rate_leases to Base.metadata)
from pipeline.db.engine import create_engine
from pipeline.db.models import Base
from pipeline.settings import load_settings

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(load_settings(database_url=url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


def _main() -> None:
    url: Any = context.config.get_main_option("sqlalchemy.url") or load_settings().database_url
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async(url))


_main()
