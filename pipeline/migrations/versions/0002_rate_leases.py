"""rate leases: per-mailbox concurrency slots of the shared Graph limiter

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import pipeline.db.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_leases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rate_leases")),
    )
    with op.batch_alter_table("rate_leases", schema=None) as batch_op:
        batch_op.create_index("ix_rate_leases_key_expires_at", ["key", "expires_at"], unique=False)
        batch_op.create_index("ix_rate_leases_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_leases", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_leases_expires_at")
        batch_op.drop_index("ix_rate_leases_key_expires_at")
    op.drop_table("rate_leases")
