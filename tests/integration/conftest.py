"""Fixtures for tests of single database statements: an engine and statement sessions on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pipeline.db.engine import create_engine, create_statement_sessionmaker
from pipeline.settings import load_settings


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's migrated database (both kinds), disposed afterwards."""
    engine = create_engine(load_settings(database_url=database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
def statement_sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions as ``AppContext.statement_sessions``: autocommit on PostgreSQL."""
    return create_statement_sessionmaker(engine)
