"""claim index: due emails in the scheduler's order, so a claim reads only what it takes

The scheduler's claim (:func:`pipeline.db.schedule.claim_due`) asks for a route's due emails
(``received`` or ``retry_wait``, ``next_attempt_at`` passed) by priority, then due time, then
age, ``LIMIT`` the free slots. No index had that order, so each claim read and sorted every
due email of the route: with a backlog of 20,000, PostgreSQL's CPU per email grew from 4 ms to
over 7 ms as the scheduler sorted the backlog many times a second. A partial index holds only
due emails (it stays as small as the backlog) in exactly that order; the claim walks it and
stops after ``LIMIT`` rows.

On PostgreSQL the index is built ``CONCURRENTLY``, outside a transaction, so a large
``incoming_emails`` table keeps taking writes while it is built.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 12:15:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NAME = "ix_incoming_emails_claim"
COLUMNS = ["route", "priority", "next_attempt_at", "created_at"]
DUE = sa.text("status IN ('received', 'retry_wait')")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.create_index(NAME, "incoming_emails", COLUMNS, postgresql_where=DUE, postgresql_concurrently=True)
        return
    op.create_index(NAME, "incoming_emails", COLUMNS, sqlite_where=DUE)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(NAME, "incoming_emails", postgresql_concurrently=True)
        return
    op.drop_index(NAME, "incoming_emails")
