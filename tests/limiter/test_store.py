"""The limiter store's grants and releases, one operation at a time, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from pipeline.db import buckets
from pipeline.db.engine import create_engine
from pipeline.db.limiter_models import RateLease
from pipeline.limiter_store import LimiterStore
from tests.limiter.conftest import limiter_settings

MAILBOX = "store@contoso.example"
#: A mailbox that could grant 5 at once (burst 20 // 4), behind a global bucket holding 2.
TIGHT_GLOBAL: dict[str, Any] = {
    "mailbox_rate_per_s": 1.0,
    "mailbox_burst": 20,
    "mailbox_max_concurrency": 10,
    "global_rate_per_s": 0.01,
    "global_burst": 2,
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[LimiterStore]:
    settings = limiter_settings(database_url, **TIGHT_GLOBAL)
    engine = create_engine(settings)
    store = LimiterStore(engine, settings)
    await store.ensure(MAILBOX)
    yield store
    await engine.dispose()


async def _state(store: LimiterStore) -> tuple[dict[str, float], int]:
    async with store._engine.connect() as connection:
        views = await buckets.show(connection)
        leases = await connection.scalar(select(func.count()).select_from(RateLease))
    return {view.key: view.available for view in views}, int(leases or 0)


async def test_a_grant_is_capped_by_the_global_bucket_then_refused_without_taking_anything(
    store: LimiterStore,
) -> None:
    capped = await store.grant(MAILBOX, 5, holder="test", lease_ttl_s=30)

    assert capped.why == "granted"
    assert len(set(capped.leases)) == 2  # the mailbox could give 5, the global bucket had 2
    available, leases = await _state(store)
    assert available[MAILBOX] == pytest.approx(18, abs=0.5)
    assert available[buckets.GLOBAL_KEY] == pytest.approx(0, abs=0.1)
    assert leases == 2

    refused = await store.grant(MAILBOX, 5, holder="test", lease_ttl_s=30)

    assert refused.why == "global-tokens"
    assert refused.leases == ()
    assert refused.wait_s > 50  # the next token of a 0.01/s bucket: not a poll every few ms
    available, leases = await _state(store)
    assert available[MAILBOX] == pytest.approx(18, abs=0.5)  # nothing taken from the mailbox
    assert leases == 2


async def test_released_leases_are_gone_and_others_stay(store: LimiterStore) -> None:
    granted = await store.grant(MAILBOX, 2, holder="test", lease_ttl_s=30)
    first, second = granted.leases

    await store.release([first])

    async with store._engine.connect() as connection:
        left = (await connection.scalars(select(RateLease.id))).all()
    assert left == [second]


async def test_a_paused_mailbox_is_refused_with_the_pause_left(store: LimiterStore) -> None:
    await store.pause(MAILBOX, 7.0)

    refused = await store.grant(MAILBOX, 1, holder="test", lease_ttl_s=30)

    assert refused.why == "paused"
    assert 6.0 < refused.wait_s <= 7.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_on_postgresql_a_grant_and_a_release_are_one_statement_each(store: LimiterStore) -> None:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store._engine.sync_engine, "before_cursor_execute", count)
    try:
        granted = await store.grant(MAILBOX, 2, holder="test", lease_ttl_s=30)
        await store.release(granted.leases)
    finally:
        event.remove(store._engine.sync_engine, "before_cursor_execute", count)

    assert granted.why == "granted"
    assert len(statements) == 2, statements
    assert "mailpipe_limiter_grant" in statements[0]
    assert "mailpipe_limiter_release" in statements[1]
