"""claim function: the scheduler's claim of due emails in one round trip (PostgreSQL only)

A claim was a transaction of seven round trips per route and round: BEGIN, the route's advisory
lock, the locked read of due rows, the in-flight count, the update, the events, COMMIT. The
scheduler claims both routes on every wake-up, so with emails arriving one by one that was
about ten statements per email. ``mailpipe_claim_due`` runs the same steps server-side and is
called in autocommit:

* a route with nothing due answers at once, without the lock;
* the advisory lock serialises claims of one route across scheduler replicas, and the in-flight
  count is a statement after it: every statement in a PL/pgSQL function takes a fresh snapshot,
  so the count sees every claim committed before the lock was ours, and the cap holds. The
  caller passes the lock key older schedulers take in their own transaction, so old and new
  replicas still exclude each other during a rolling upgrade;
* the chosen rows (``FOR UPDATE SKIP LOCKED``, in the claim index's order) are marked
  ``dispatched`` with their ``dispatched`` events, and returned in that order.

SQLite keeps the statements in Python (:func:`pipeline.db.schedule.claim_due`): its round trips
are function calls in the same process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 15:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DUE = "e.route = p_route AND e.status IN ('received', 'retry_wait') AND e.next_attempt_at <= p_now"

CLAIM = f"""
CREATE FUNCTION mailpipe_claim_due(
    p_route text, p_cap integer, p_batch integer, p_now timestamptz, p_lock_key bigint
) RETURNS TABLE (claimed_id uuid, claimed_publisher_message_id text, claimed_attempt integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    in_flight integer;
    free integer;
BEGIN
    PERFORM 1 FROM incoming_emails AS e WHERE {_DUE} LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(p_lock_key);
    SELECT count(*) INTO in_flight FROM incoming_emails AS e
     WHERE e.route = p_route AND e.status IN ('dispatched', 'sending');
    free := LEAST(GREATEST(p_cap - in_flight, 0), p_batch);
    IF free = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH chosen AS (
        SELECT e.id FROM incoming_emails AS e
         WHERE {_DUE}
         ORDER BY e.priority, e.next_attempt_at, e.created_at
         LIMIT free
         FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE incoming_emails AS e
           SET status = 'dispatched', attempt_count = e.attempt_count + 1,
               dispatched_at = p_now, updated_at = p_now
          FROM chosen WHERE e.id = chosen.id
        RETURNING e.id, e.publisher_message_id, e.attempt_count, e.priority, e.next_attempt_at, e.created_at
    ), events AS (
        INSERT INTO email_events (incoming_email_id, publisher_message_id, event, detail, created_at)
        SELECT c.id, c.publisher_message_id, 'dispatched',
               jsonb_build_object('route', p_route, 'attempt', c.attempt_count), p_now
          FROM claimed AS c
    )
    SELECT c.id, c.publisher_message_id::text, c.attempt_count FROM claimed AS c
     ORDER BY c.priority, c.next_attempt_at, c.created_at;
END;
$$
"""  # noqa: S608 - only the constant _DUE is interpolated


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(CLAIM)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION mailpipe_claim_due(text, integer, integer, timestamptz, bigint)")
