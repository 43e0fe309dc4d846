"""limiter functions: a grant and a lease release in one round trip each (PostgreSQL only)

The shared limiter's grant was a transaction of eight round trips per Graph call (BEGIN, SET
LOCAL, lock the bucket, count the leases, take tokens twice, insert the leases, COMMIT), and the
release another four; together about 40 % of the database statements an email cost. Each is
now one autocommit ``SELECT`` of a function that does the same steps server-side, in the same
order of locks (mailbox row, then the global row), with the same arithmetic as
:class:`pipeline.db.buckets.BucketSql`. Every statement in a PL/pgSQL function takes a fresh
snapshot, so the lease count still sees every lease committed before the row lock was ours.

``set_config('synchronous_commit', 'off', true)`` inside the function lasts until the end of
the statement's implicit transaction, so these commits stay asynchronous as before (see
:mod:`pipeline.limiter_store`). SQLite keeps the statements in Python: its round trips are
function calls in the same process.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# available = LEAST(burst, tokens + rate * seconds since refilled_at), as in BucketSql.available.
_AVAILABLE = (
    "LEAST(b.burst::float8, b.tokens + b.rate_per_s"
    " * GREATEST(0.0, EXTRACT(EPOCH FROM clock_timestamp() - b.refilled_at)::float8))"
)

GRANT = """
CREATE FUNCTION mailpipe_limiter_grant(
    p_key text, p_want integer, p_holder text, p_ttl_s float8,
    p_global text, p_lease_poll_s float8, p_min_wait_s float8
) RETURNS TABLE (why text, wait_s float8, leases uuid[])
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
    g record;
    live integer;
    free integer;
    n integer;
    ids uuid[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT b.rate_per_s, b.burst, b.max_concurrency, $AVAILABLE AS available,
           EXTRACT(EPOCH FROM b.paused_until - clock_timestamp())::float8 AS pause_left
      INTO r FROM rate_buckets AS b WHERE b.key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0.0::float8, '{}'::uuid[];
        RETURN;
    END IF;
    IF r.pause_left > 0 THEN
        RETURN QUERY SELECT 'paused'::text, r.pause_left, '{}'::uuid[];
        RETURN;
    END IF;
    -- A fresh snapshot: sees every lease committed before the row lock above was ours.
    SELECT count(*) INTO live FROM rate_leases AS l
     WHERE l.key = p_key AND l.expires_at > clock_timestamp();
    free := CASE WHEN r.max_concurrency > 0 THEN r.max_concurrency - live ELSE p_want END;
    IF free <= 0 THEN
        RETURN QUERY SELECT 'concurrency'::text, p_lease_poll_s, '{}'::uuid[];
        RETURN;
    END IF;
    -- A quarter of the burst at most, so one process cannot empty a refilled bucket alone.
    n := LEAST(p_want, free, GREATEST(1, r.burst / 4), floor(r.available)::integer);
    IF n < 1 THEN
        RETURN QUERY SELECT 'tokens'::text,
            GREATEST(p_min_wait_s, (1.0 - r.available) / r.rate_per_s), '{}'::uuid[];
        RETURN;
    END IF;
    -- The global row is locked while the mailbox row is held (always in that order) until this
    -- statement's commit. Grant what both buckets have: refusing a batch the global bucket can
    -- only partly serve would have the pump ask again every few milliseconds until it refilled.
    SELECT b.rate_per_s, $AVAILABLE AS available,
           EXTRACT(EPOCH FROM b.paused_until - clock_timestamp())::float8 AS pause_left
      INTO g FROM rate_buckets AS b WHERE b.key = p_global FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'missing'::text, 0.0::float8, '{}'::uuid[];
        RETURN;
    END IF;
    IF g.pause_left > 0 THEN
        RETURN QUERY SELECT 'global-tokens'::text, g.pause_left, '{}'::uuid[];
        RETURN;
    END IF;
    n := LEAST(n, floor(g.available)::integer);
    IF n < 1 THEN
        RETURN QUERY SELECT 'global-tokens'::text,
            GREATEST(p_min_wait_s, (1.0 - g.available) / g.rate_per_s), '{}'::uuid[];
        RETURN;
    END IF;
    UPDATE rate_buckets AS b
       SET tokens = $AVAILABLE - n, refilled_at = GREATEST(b.refilled_at, clock_timestamp())
     WHERE b.key = p_global AND $AVAILABLE >= n;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'mailpipe_limiter_grant: bucket % changed under its row lock', p_global;
    END IF;
    -- Both rows are ours since the SELECTs above and the clock only moves forward, so the tokens
    -- counted there are still there.
    UPDATE rate_buckets AS b
       SET tokens = $AVAILABLE - n, refilled_at = GREATEST(b.refilled_at, clock_timestamp())
     WHERE b.key = p_key AND $AVAILABLE >= n;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'mailpipe_limiter_grant: bucket % changed under its row lock', p_key;
    END IF;
    ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, n));
    INSERT INTO rate_leases (id, key, holder, acquired_at, expires_at)
    SELECT lease, p_key, p_holder, clock_timestamp(), clock_timestamp() + make_interval(secs => p_ttl_s)
      FROM unnest(ids) AS lease;
    RETURN QUERY SELECT 'granted'::text, 0.0::float8, ids;
END
$$
""".replace("$AVAILABLE", _AVAILABLE)

RELEASE = """
CREATE FUNCTION mailpipe_limiter_release(p_ids uuid[]) RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    deleted integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM rate_leases WHERE id = ANY(p_ids);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(GRANT)
    op.execute(RELEASE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION mailpipe_limiter_release(uuid[])")
    op.execute("DROP FUNCTION mailpipe_limiter_grant(text, integer, text, float8, text, float8, float8)")
