"""What the store boundary calls "the database is away" (transient) and what it lets through."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import IntegrityError

from pipeline.db.engine import create_engine
from pipeline.db.errors import store_errors
from pipeline.errors import StoreUnavailable
from pipeline.settings import load_settings
from tests.limiter.proxy import free_port


async def test_a_server_starting_up_is_store_unavailable_even_unwrapped_by_sqlalchemy() -> None:
    # asyncpg raises this while *connecting*, where SQLAlchemy does not wrap it in a DBAPIError.
    with pytest.raises(StoreUnavailable, match="database unavailable during ingest"):
        async with store_errors("ingest"):
            raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")


async def test_a_refused_connection_is_store_unavailable() -> None:
    port = free_port()  # nothing listens there
    engine = create_engine(load_settings(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test"))
    try:
        with pytest.raises(StoreUnavailable):
            async with store_errors("probe"), engine.connect():
                pass
    finally:
        await engine.dispose()


async def test_a_constraint_violation_is_not_translated() -> None:
    # A bug in mailpipe must surface, not be retried as if the database were away.
    error = IntegrityError("INSERT ...", {}, Exception("duplicate key"))
    with pytest.raises(IntegrityError):
        async with store_errors("ingest"):
            raise error
