"""Token-bucket arithmetic in SQL, shared by the limiter and ``mailpipe limits``.

A bucket row (``rate_buckets``) stores ``tokens`` as of ``refilled_at``; the tokens available
now are ``LEAST(burst, tokens + rate_per_s * (now - refilled_at))``. Nothing refills rows in
the background: every statement that takes tokens computes the refill itself.

Clocks: on PostgreSQL "now" is the database's ``clock_timestamp()``, read when the row is
evaluated (after any lock wait), so processes on hosts with skewed clocks share one timeline.
SQLite is a local file with no server clock; there "now" is the application clock, passed in
by :meth:`BucketSql.params` once the transaction holds SQLite's lock (every process on one host
reads the same clock). ``refilled_at`` only ever moves forward (``GREATEST``), so two
statements racing can never credit the same interval twice.

Statements are built once per dialect with bound parameters and reused: building and hashing
the expression trees per call would cost more CPU than the database work itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BindParameter,
    Float,
    Select,
    Update,
    bindparam,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from pipeline.db.limiter_models import RateLease
from pipeline.db.models import RateBucket
from pipeline.db.types import UtcDateTime, utcnow
from pipeline.settings import Settings

__all__ = [
    "GLOBAL_KEY",
    "BucketDefaults",
    "BucketSql",
    "BucketView",
    "ensure_bucket",
    "mailbox_key",
    "pause",
    "reset",
    "set_limits",
    "show",
]

#: Key of the one bucket every Graph call also draws from, whatever its mailbox.
GLOBAL_KEY = "*"


def mailbox_key(mailbox: str) -> str:
    """The bucket key of a sender mailbox: its address, trimmed and lower-cased."""
    key = mailbox.strip().lower()
    if not key or key == GLOBAL_KEY:
        raise ValueError(f"not a mailbox: {mailbox!r}")
    return key


@dataclass(frozen=True)
class BucketDefaults:
    """Values for a bucket that has no row yet. ``max_concurrency`` 0 means no cap."""

    rate_per_s: float
    burst: int
    max_concurrency: int

    @classmethod
    def for_key(cls, settings: Settings, key: str) -> BucketDefaults:
        if key == GLOBAL_KEY:
            # There is no global concurrency setting: Outlook's cap is per mailbox.
            return cls(settings.global_rate_per_s, settings.global_burst, 0)
        return cls(settings.mailbox_rate_per_s, settings.mailbox_burst, settings.mailbox_max_concurrency)


class BucketSql:
    """The dialect's expressions and the limiter's statements, with bound parameters.

    Parameters: ``bucket`` (the key), ``n`` (tokens), and seconds such as ``ttl`` for
    :meth:`later`; :meth:`params` adds the clock readings SQLite needs.
    """

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        key: BindParameter[str] = bindparam("bucket")
        available = self.available()
        self.read: Select[Any] = select(
            RateBucket.rate_per_s,
            RateBucket.burst,
            RateBucket.max_concurrency,
            available.label("available"),
            self.seconds_between(RateBucket.paused_until, self.now()).label("pause_left"),
        ).where(RateBucket.key == key)
        if postgres:
            self.read = self.read.with_for_update()  # serialises the grants of one mailbox
        #: Takes ``n`` tokens in one statement, only if the bucket has them and is not paused.
        self.take: Update = (
            update(RateBucket)
            .where(RateBucket.key == key, available >= bindparam("n"), self.not_paused())
            .values(
                tokens=available - bindparam("n"),
                refilled_at=self.greatest(RateBucket.refilled_at, self.now()),
            )
            .returning(RateBucket.key)
        )
        self.live_leases: Select[Any] = (
            select(func.count()).select_from(RateLease).where(RateLease.key == key, RateLease.expires_at > self.now())
        )

    @staticmethod
    def of(connection: AsyncConnection) -> BucketSql:
        return BucketSql(connection.dialect.name == "postgresql")

    def now(self) -> ColumnElement[datetime]:
        if self.postgres:
            return func.clock_timestamp(type_=UtcDateTime())
        return bindparam("now", type_=UtcDateTime())

    def later(self, name: str) -> ColumnElement[datetime]:
        """``now`` plus the seconds in parameter ``name``."""
        if self.postgres:
            return self.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam(name, type_=Float))
        return bindparam(f"{name}_at", type_=UtcDateTime())

    def params(self, seconds: Mapping[str, float] | None = None, **values: Any) -> dict[str, Any]:
        """The parameters of one execution: ``values``, and durations for :meth:`later`.

        On PostgreSQL the durations are passed as they are; on SQLite the clock is read here
        and passed as ``now`` and ``<name>_at``, so call this once the transaction holds its lock.
        """
        if self.postgres:
            return {**values, **(seconds or {})}
        now = utcnow()
        clock = {f"{name}_at": now + timedelta(seconds=s) for name, s in (seconds or {}).items()}
        return {**values, **clock, "now": now}

    def seconds_between(self, later: Any, earlier: Any) -> ColumnElement[float]:
        if self.postgres:
            return cast(func.extract("epoch", later - earlier), Float)
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0

    def least(self, *values: Any) -> ColumnElement[Any]:
        return func.least(*values) if self.postgres else func.min(*values)

    def greatest(self, *values: Any) -> ColumnElement[Any]:
        return func.greatest(*values) if self.postgres else func.max(*values)

    def available(self) -> ColumnElement[float]:
        """Tokens in the bucket now: the stored ones plus the refill since ``refilled_at``."""
        elapsed = self.greatest(literal(0.0), self.seconds_between(self.now(), RateBucket.refilled_at))
        return self.least(cast(RateBucket.burst, Float), RateBucket.tokens + RateBucket.rate_per_s * elapsed)

    def not_paused(self) -> ColumnElement[bool]:
        return or_(RateBucket.paused_until.is_(None), RateBucket.paused_until <= self.now())


async def ensure_bucket(connection: AsyncConnection, key: str, defaults: BucketDefaults) -> None:
    """Create ``key``'s row, full, from ``defaults`` unless it exists (a row wins over settings)."""
    insert = pg_insert if connection.dialect.name == "postgresql" else sqlite_insert
    await connection.execute(
        insert(RateBucket)
        .values(
            key=key,
            tokens=float(defaults.burst),
            rate_per_s=defaults.rate_per_s,
            burst=defaults.burst,
            max_concurrency=defaults.max_concurrency,
            refilled_at=utcnow(),
            paused_until=None,
        )
        .on_conflict_do_nothing(index_elements=["key"])
    )


async def pause(connection: AsyncConnection, key: str, seconds: float, defaults: BucketDefaults) -> None:
    """Push ``paused_until`` to at least now + ``seconds``; a longer pause already set stays."""
    await ensure_bucket(connection, key, defaults)
    sql = BucketSql.of(connection)
    until = sql.later("pause")
    await connection.execute(
        update(RateBucket)
        .where(RateBucket.key == key)
        .values(paused_until=sql.greatest(func.coalesce(RateBucket.paused_until, until), until)),
        sql.params({"pause": seconds}),
    )


async def set_limits(
    connection: AsyncConnection,
    key: str,
    defaults: BucketDefaults,
    *,
    rate_per_s: float | None = None,
    burst: int | None = None,
    max_concurrency: int | None = None,
    resume: bool = False,
) -> None:
    """Change a bucket's settings; running limiters use them from their next grant.

    The tokens are settled at the old rate first (SET expressions read the old row), so a rate
    change is not applied retroactively to the time since the last take.
    """
    await ensure_bucket(connection, key, defaults)
    sql = BucketSql.of(connection)
    new_burst = cast(literal(burst), Float) if burst is not None else cast(RateBucket.burst, Float)
    values: dict[str, Any] = {
        "tokens": sql.least(new_burst, sql.available()),
        "refilled_at": sql.greatest(RateBucket.refilled_at, sql.now()),
    }
    if rate_per_s is not None:
        values["rate_per_s"] = rate_per_s
    if burst is not None:
        values["burst"] = burst
    if max_concurrency is not None:
        values["max_concurrency"] = max_concurrency
    if resume:
        values["paused_until"] = None
    await connection.execute(update(RateBucket).where(RateBucket.key == key).values(**values), sql.params())


async def reset(connection: AsyncConnection, key: str) -> bool:
    """Delete ``key``'s row so the settings' defaults apply again; False if there was none."""
    result = await connection.execute(delete(RateBucket).where(RateBucket.key == key))
    return bool(result.rowcount)


@dataclass(frozen=True)
class BucketView:
    """One bucket as ``mailpipe limits show`` prints it."""

    key: str
    rate_per_s: float
    burst: int
    max_concurrency: int
    available: float
    pause_left_s: float
    leases: int


async def show(connection: AsyncConnection) -> list[BucketView]:
    """Every bucket row with its tokens now, pause left and live leases, global first."""
    sql = BucketSql.of(connection)
    live = (
        select(RateLease.key, func.count().label("leases"))
        .where(RateLease.expires_at > sql.now())
        .group_by(RateLease.key)
        .subquery()
    )
    rows = await connection.execute(
        select(
            RateBucket.key,
            RateBucket.rate_per_s,
            RateBucket.burst,
            RateBucket.max_concurrency,
            sql.available().label("available"),
            sql.seconds_between(RateBucket.paused_until, sql.now()).label("pause_left"),
            func.coalesce(live.c.leases, 0).label("leases"),
        )
        .outerjoin(live, live.c.key == RateBucket.key)
        .order_by(RateBucket.key != GLOBAL_KEY, RateBucket.key),
        sql.params(),
    )
    return [
        BucketView(
            r.key, r.rate_per_s, r.burst, r.max_concurrency, float(r.available),
            max(0.0, float(r.pause_left or 0.0)), int(r.leases),
        )
        for r in rows
    ]  # fmt: skip
