"""WriteChain: independent writes commit together, in one statement on PostgreSQL, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from pipeline.db.chain import WriteChain, prefixed
from pipeline.db.events import EVENT_WRITE, event_params
from pipeline.db.models import Base, EmailEvent
from pipeline.db.tables import insert_ignoring_conflicts
from pipeline.db.types import utcnow

rate_buckets = Base.metadata.tables["rate_buckets"]

_NEW_BUCKET = insert_ignoring_conflicts(
    rate_buckets,
    ["key", "tokens", "rate_per_s", "burst", "max_concurrency", "refilled_at"],
    conflict=["key"],
    returning="key",
    param_prefix="new_",
)
_REFILL = (
    update(rate_buckets)
    .where(rate_buckets.c.key == bindparam("refill_key"))
    .values(tokens=bindparam("refill_tokens"))
    .returning(rate_buckets.c.key)
)
CHAIN = WriteChain(_NEW_BUCKET, _REFILL, EVENT_WRITE)


def _params(new_key: str, refill_key: str, event: str | None = "chained") -> dict[str, Any]:
    return {
        **prefixed("new_", key=new_key, tokens=1.0, rate_per_s=1.0, burst=1, max_concurrency=1, refilled_at=utcnow()),
        "refill_key": refill_key,
        "refill_tokens": 7.0,
        **event_params("chained", email_id=None, publisher_message_id=new_key),
        "event_name": event,
    }


async def _buckets(engine: AsyncEngine) -> dict[str, float]:
    async with engine.connect() as connection:
        return {row.key: row.tokens for row in await connection.execute(select(rate_buckets))}


async def _events(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(EmailEvent.__table__)) or 0)


async def test_writes_commit_together_and_report_the_rows_each_returned(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with statement_sessions.begin() as session:
        first = await CHAIN.run(session, _params("a", refill_key="nobody"))
    async with statement_sessions.begin() as session:
        second = await CHAIN.run(session, _params("a", refill_key="a"))  # "a" exists: no insert

    assert first == (1, 0, 1)
    assert second == (0, 1, 1)
    assert await _buckets(engine) == {"a": 7.0}
    assert await _events(engine) == 2


async def test_one_failing_write_leaves_no_trace_of_the_others(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(Exception, match=r"(?i)null"):
        async with statement_sessions.begin() as session:
            await CHAIN.run(session, _params("b", refill_key="nobody", event=None))  # event is NOT NULL

    assert await _buckets(engine) == {}
    assert await _events(engine) == 0


async def test_a_parameter_named_after_a_written_column_is_refused(
    statement_sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Core would quietly add "burst" to the UPDATE's SET clause (and "detail" to the event).
    with pytest.raises(ValueError, match=r"\['burst', 'detail'\]"):
        async with statement_sessions.begin() as session:
            await CHAIN.run(session, {**_params("c", refill_key="c"), "burst": 9, "detail": {}})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_the_chain_is_one_statement_and_commits_by_itself(
    engine: AsyncEngine, statement_sessions: async_sessionmaker[AsyncSession]
) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        async with statement_sessions.begin() as session:
            await CHAIN.run(session, _params("d", refill_key="nobody"))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)

    assert len(statements) == 1, statements
    assert statements[0].startswith("WITH write_0 AS")
    assert await _buckets(engine) == {"d": 1.0}
