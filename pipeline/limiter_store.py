"""The shared limiter's database operations: grants, lease releases and renewals, pauses.

A *grant* is one short transaction that hands out up to ``want`` Graph calls for one mailbox:

1. lock the mailbox's bucket row (``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite every
   transaction is ``BEGIN IMMEDIATE`` and so already serialised) and read its settings, the
   tokens available now and the pause left;
2. count the mailbox's live leases (a fresh statement, so it sees every lease committed before
   the lock was ours);
3. cap ``n`` by what the global bucket holds (a batch it can only partly serve is granted in
   part rather than refused, which would have the pump ask again every ``MIN_WAIT_S``);
4. take ``n`` tokens from the mailbox bucket with one guarded ``UPDATE ... WHERE available >=
   n AND not paused``, insert ``n`` leases, and take ``n`` from the global bucket with the same
   guarded ``UPDATE``. If that last take fails (the global bucket is paused) the transaction is
   rolled back: nothing was taken anywhere.

On PostgreSQL a grant and a release are one round trip each: an autocommit ``SELECT`` of the
functions ``mailpipe_limiter_grant`` and ``mailpipe_limiter_release`` (migration 0003), which
run these steps server-side (the global row locked after the mailbox row, as here). Each step
its own round trip made the limiter about 40 % of an email's database statements. SQLite runs
the steps from here: its round trips are calls into the same process.

On PostgreSQL, while a mailbox's bucket runs short in this process, a grant first *peeks*
(one autocommit read, no lock): when the rate binds, every process wakes for the next token
and all but one would otherwise queue a locked transaction behind the winner's only to learn
it was taken.

When nothing can be granted the answer says how long to wait: the pause left, the time until
one token has refilled, or a short poll interval when all leases are held (another process's
release cannot be waited for).

On PostgreSQL the per-call writes (grant, release, renew) commit asynchronously
(``synchronous_commit = off``): a WAL flush per Graph call would cost more than the limiter
state is worth. A database crash can lose the last fraction of a second of those writes: a few
tokens may be granted twice and a few leases forgotten, once, right after the crash.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BindParameter, TextClause, bindparam, delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.db import buckets
from pipeline.db.buckets import GLOBAL_KEY, BucketDefaults, BucketSql
from pipeline.db.errors import store_errors
from pipeline.db.limiter_models import RateLease
from pipeline.db.models import RateBucket
from pipeline.settings import Settings

__all__ = ["LEASE_POLL_S", "Grant", "LimiterStore"]

#: How often a process asks again while every lease of a mailbox is held elsewhere.
LEASE_POLL_S = 0.05
#: Shortest wait reported for "no token yet", so rounding never turns into a busy loop.
MIN_WAIT_S = 0.002

Why = Literal["granted", "paused", "concurrency", "tokens", "global-tokens", "missing"]


@dataclass(frozen=True)
class Grant:
    """The answer to one grant: leases handed out, or why none and how long to wait."""

    leases: tuple[uuid.UUID, ...]
    why: Why
    wait_s: float = 0.0


class _Rollback(Exception):
    def __init__(self, grant: Grant) -> None:
        super().__init__(grant.why)
        self.grant = grant


class LimiterStore:
    """Runs each operation in its own short transaction; raises ``StoreUnavailable`` when the DB is away."""

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._turn = asyncio.Lock()
        #: Mailboxes whose last grant here was refused for tokens or a pause (see :meth:`_peek`).
        self._short: set[str] = set()
        sql = self._sql = BucketSql(not settings.is_sqlite)
        ids: BindParameter[list[uuid.UUID]] = bindparam("ids", expanding=True)
        # id, key and holder come from each row's parameters (an executemany).
        self._insert_lease = insert(RateLease).values(acquired_at=sql.now(), expires_at=sql.later("ttl"))
        #: The same reading as ``sql.read`` without the row lock, for :meth:`_peek`.
        self._peek_read = select(
            RateBucket.rate_per_s,
            sql.available().label("available"),
            sql.seconds_between(RateBucket.paused_until, sql.now()).label("pause_left"),
        ).where(RateBucket.key == bindparam("bucket"))
        self._global = select(RateBucket.rate_per_s, sql.available().label("available")).where(
            RateBucket.key == GLOBAL_KEY
        )
        self._release = delete(RateLease).where(RateLease.id.in_(ids))
        self._renew = (
            update(RateLease)
            .where(RateLease.id.in_(ids), RateLease.expires_at > sql.now())
            .values(expires_at=sql.later("ttl"))
            .returning(RateLease.id)
        )
        self._purge = delete(RateLease).where(RateLease.expires_at <= sql.now())
        self._grant_call: TextClause = text(
            "SELECT why, wait_s, leases FROM mailpipe_limiter_grant("
            ":key, :want, :holder, :ttl_s, :global_key, :lease_poll_s, :min_wait_s)"
        )
        self._release_call: TextClause = text("SELECT mailpipe_limiter_release(:ids)")

    def defaults(self, key: str) -> BucketDefaults:
        return BucketDefaults.for_key(self._settings, key)

    @asynccontextmanager
    async def _hot(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """A transaction of the per-call kind: asynchronous commit on PostgreSQL (module docstring)."""
        async with self._sqlite_turn(), store_errors(operation), self._engine.begin() as connection:
            if self._sql.postgres:
                await connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            yield connection

    @asynccontextmanager
    async def _autocommit(self, operation: str) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL: a connection whose every statement is its own transaction."""
        async with store_errors(operation), self._engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def _sqlite_turn(self) -> AsyncIterator[None]:
        """On SQLite, one limiter transaction of this process at a time.

        SQLite has one writer lock; two of our own connections contending for it would wait in
        SQLite's busy handler, which sleeps in steps of up to 100 ms. Queueing here instead
        hands the lock over as soon as it is free.
        """
        if self._sql.postgres:
            yield
            return
        async with self._turn:
            yield

    async def grant(self, key: str, want: int, *, holder: str, lease_ttl_s: float) -> Grant:
        """Grant up to ``want`` calls for mailbox ``key`` (see the module docstring)."""
        if self._sql.postgres and key in self._short and (refused := await self._peek(key)) is not None:
            return refused
        if self._sql.postgres:
            grant = await self._grant_in_database(key, want, holder, lease_ttl_s)
        else:
            try:
                async with self._hot("limiter grant") as connection:
                    grant = await self._grant(connection, key, want, holder, lease_ttl_s)
            except _Rollback as rollback:
                grant = rollback.grant
        # Peek first only while the bucket runs short: otherwise the read would be pure overhead.
        if grant.why in ("tokens", "paused"):
            self._short.add(key)
        else:
            self._short.discard(key)
        return grant

    async def _peek(self, key: str) -> Grant | None:
        """PostgreSQL: a refusal read without a transaction or a lock, or None to try a grant.

        When the rate binds, every process with waiting calls wakes when the next token is due
        and all but one find it taken. The losers learn that from one autocommit read instead
        of a locked transaction of five round trips queued behind the winner's. The locked
        grant decides; a peek that sees a token only lets the process ask.
        """
        async with self._autocommit("limiter peek") as connection:
            row = (await connection.execute(self._peek_read, {"bucket": key})).one_or_none()
        if row is None:
            return None  # the grant creates the row
        if row.pause_left is not None and row.pause_left > 0:
            return Grant((), "paused", float(row.pause_left))
        if row.available < 1:
            return Grant((), "tokens", _refill_wait(row.available, row.rate_per_s))
        return None

    async def _grant_in_database(self, key: str, want: int, holder: str, ttl_s: float) -> Grant:
        """PostgreSQL: the grant below as one call of ``mailpipe_limiter_grant`` (migration 0003)."""
        params = {
            "key": key,
            "want": want,
            "holder": holder,
            "ttl_s": ttl_s,
            "global_key": GLOBAL_KEY,
            "lease_poll_s": LEASE_POLL_S,
            "min_wait_s": MIN_WAIT_S,
        }
        async with self._autocommit("limiter grant") as connection:
            row = (await connection.execute(self._grant_call, params)).one()
        why: Why = row.why
        return Grant(tuple(row.leases), why, float(row.wait_s))

    async def _grant(self, connection: AsyncConnection, key: str, want: int, holder: str, ttl_s: float) -> Grant:
        sql = self._sql
        # SQLite: the clock is read once the transaction holds the lock (engine.begin() above).
        params = sql.params({"ttl": ttl_s}, bucket=key)
        row = (await connection.execute(sql.read, params)).one_or_none()
        if row is None:
            return Grant((), "missing")
        if row.pause_left is not None and row.pause_left > 0:
            return Grant((), "paused", float(row.pause_left))
        live = await connection.scalar(sql.live_leases, params)
        free = row.max_concurrency - int(live or 0) if row.max_concurrency > 0 else want
        if free <= 0:
            return Grant((), "concurrency", LEASE_POLL_S)
        # A quarter of the burst at most, so one process cannot empty a refilled bucket alone.
        n = min(want, free, max(1, row.burst // 4), math.floor(row.available))
        if n < 1:
            return Grant((), "tokens", _refill_wait(row.available, row.rate_per_s))
        # Grant what the global bucket has too: refusing a batch it can only partly serve would
        # have the pump ask again every MIN_WAIT_S until it refilled.
        shared = (await connection.execute(self._global, params)).one_or_none()
        if shared is None:
            return Grant((), "missing")
        n = min(n, math.floor(shared.available))
        if n < 1:
            return Grant((), "global-tokens", _refill_wait(shared.available, shared.rate_per_s))
        if (await connection.execute(sql.take, {**params, "n": n})).first() is None:
            return Grant((), "tokens", MIN_WAIT_S)  # only if the row changed under us; ask again
        leases = tuple(uuid.uuid4() for _ in range(n))
        rows = [{**params, "id": lease, "key": key, "holder": holder} for lease in leases]
        await connection.execute(self._insert_lease, rows)
        if (await connection.execute(sql.take, {**params, "bucket": GLOBAL_KEY, "n": n})).first() is None:
            raise _Rollback(await self._global_shortfall(connection, params))
        return Grant(leases, "granted")

    async def _global_shortfall(self, connection: AsyncConnection, params: dict[str, object]) -> Grant:
        row = (await connection.execute(self._global, params)).one_or_none()
        if row is None:
            return Grant((), "missing")
        return Grant((), "global-tokens", _refill_wait(row.available, row.rate_per_s))

    async def ensure(self, key: str) -> None:
        """Create the rows of ``key`` and of the global bucket from settings where missing."""
        async with store_errors("limiter setup"), self._engine.begin() as connection:
            await buckets.ensure_bucket(connection, GLOBAL_KEY, self.defaults(GLOBAL_KEY))
            await buckets.ensure_bucket(connection, key, self.defaults(key))

    async def release(self, leases: Collection[uuid.UUID]) -> None:
        """Free the leases of calls that have ended."""
        if not leases:
            return
        if self._sql.postgres:
            async with self._autocommit("limiter release") as connection:
                await connection.execute(self._release_call, {"ids": list(leases)})
            return
        async with self._hot("limiter release") as connection:
            await connection.execute(self._release, {"ids": list(leases)})

    async def renew(self, leases: Collection[uuid.UUID], lease_ttl_s: float) -> set[uuid.UUID]:
        """Push the expiry of still-live ``leases`` forward; return those that had already expired.

        An expired lease is not revived: its slot may already be someone else's.
        """
        if not leases:
            return set()
        async with self._hot("limiter renew") as connection:
            params = self._sql.params({"ttl": lease_ttl_s}, ids=list(leases))
            renewed = (await connection.execute(self._renew, params)).scalars()
            return set(leases) - set(renewed)

    async def purge_expired(self) -> int:
        """Delete leases past their expiry (left by killed processes); they count for nothing already."""
        async with self._hot("limiter purge") as connection:
            result = await connection.execute(self._purge, self._sql.params())
            return int(result.rowcount or 0)

    async def pause(self, key: str, seconds: float) -> None:
        """Pause ``key`` for every process until now + ``seconds`` (a longer pause stays)."""
        async with store_errors("limiter pause"), self._engine.begin() as connection:
            await buckets.pause(connection, key, seconds, self.defaults(key))


def _refill_wait(available: float, rate_per_s: float) -> float:
    return max(MIN_WAIT_S, (1.0 - float(available)) / rate_per_s)
