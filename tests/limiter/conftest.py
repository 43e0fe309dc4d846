"""Limiter instances on the test database, each with its own engine like a separate process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from pipeline.db.engine import create_engine
from pipeline.limiter import DEFAULT_LEASE_TTL_S, SharedLimiter
from pipeline.limiter_store import LimiterStore
from pipeline.settings import Settings, load_settings

#: Small limits so a few seconds show the shape: 20 calls/s, a burst of 5, 3 at a time.
LIMITS: dict[str, Any] = {
    "mailbox_rate_per_s": 20.0,
    "mailbox_burst": 5,
    "mailbox_max_concurrency": 3,
    "global_rate_per_s": 1000.0,
    "global_burst": 100,
    "limiter_refresh_s": 0.5,
}

MakeLimiter = Callable[..., Awaitable[SharedLimiter]]


def limiter_settings(database_url: str, **overrides: Any) -> Settings:
    return load_settings(database_url=database_url, **{**LIMITS, **overrides})


@pytest.fixture
async def make_limiter(database_url: str) -> AsyncIterator[MakeLimiter]:
    """Build limiters (closed, with their engines, at the end of the test)."""
    made: list[tuple[SharedLimiter, Any]] = []

    async def make(url: str | None = None, lease_ttl_s: float = DEFAULT_LEASE_TTL_S, **overrides: Any) -> SharedLimiter:
        settings = limiter_settings(url or database_url, **overrides)
        engine = create_engine(settings)
        limiter = SharedLimiter(
            LimiterStore(engine, settings),
            settings,
            holder=f"test-instance-{len(made)}",
            lease_ttl_s=lease_ttl_s,
        )
        made.append((limiter, engine))
        return limiter

    yield make
    for limiter, engine in made:
        await limiter.aclose()
        await engine.dispose()
