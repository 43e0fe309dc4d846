"""Alembic migrations: every revision goes down and up again, on both databases."""

from __future__ import annotations

import asyncio

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

import pipeline.db.limiter_models  # noqa: F401 - registers rate_leases on Base.metadata
from pipeline.db.migrate import alembic_config
from pipeline.db.models import Base

FUNCTIONS = {"mailpipe_claim_due", "mailpipe_limiter_grant", "mailpipe_limiter_release"}


async def _schema(database_url: str) -> tuple[set[str], set[str]]:
    """The tables, and on PostgreSQL the limiter's functions (migration 0003)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
            functions: set[str] = set()
            if connection.dialect.name == "postgresql":
                rows = await connection.execute(text("SELECT proname FROM pg_proc WHERE proname LIKE 'mailpipe_%'"))
                functions = {row.proname for row in rows}
    finally:
        await engine.dispose()
    return tables - {"alembic_version"}, functions


async def test_migrations_go_down_to_base_and_up_again(database_url: str) -> None:
    config = alembic_config(database_url)  # the fixture migrated the database to head
    at_head = await _schema(database_url)

    await asyncio.to_thread(command.downgrade, config, "base")
    assert await _schema(database_url) == (set(), set())

    await asyncio.to_thread(command.upgrade, config, "head")
    assert await _schema(database_url) == at_head
    assert at_head[0] == set(Base.metadata.tables)
    postgres = database_url.startswith("postgresql")
    assert at_head[1] == (FUNCTIONS if postgres else set())


async def test_the_migrated_schema_is_what_the_models_declare(database_url: str) -> None:
    """Alembic's autogenerate finds nothing to add or change: no column or index was left out."""
    engine = create_async_engine(database_url)  # the fixture migrated the database to head
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []
