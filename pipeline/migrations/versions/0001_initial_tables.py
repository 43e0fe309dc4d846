"""initial tables

Revision ID: 0001
Revises:
Create Date: 2026-11-22 17:01:59.127442
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pipeline.db.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "dlq",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=True),
        sa.Column("publisher_message_id", sa.String(length=255), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("raw_body", sa.Text(), nullable=True),
        sa.Column("mailbox", sa.String(length=320), nullable=True),
        sa.Column("created_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("purged_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dlq")),
    )
    with op.batch_alter_table("dlq", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dlq_incoming_email_id"), ["incoming_email_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_dlq_publisher_message_id"), ["publisher_message_id"], unique=False)

    op.create_table(
        "email_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=True),
        sa.Column("publisher_message_id", sa.String(length=255), nullable=True),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_events")),
    )
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.create_index("ix_email_events_email_time", ["incoming_email_id", "created_at"], unique=False)

    op.create_table(
        "incoming_emails",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("publisher_message_id", sa.String(length=255), nullable=False),
        sa.Column("idempotency_source", sa.String(length=16), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("send_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False),
        sa.Column("backup_attempt_count", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("correlation_key", sa.String(length=64), nullable=False),
        sa.Column("graph_draft_id", sa.String(length=512), nullable=True),
        sa.Column("send_started_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("receipt_confirmed_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incoming_emails")),
        sa.UniqueConstraint("correlation_key", name=op.f("uq_incoming_emails_correlation_key")),
        sa.UniqueConstraint("publisher_message_id", name=op.f("uq_incoming_emails_publisher_message_id")),
    )
    with op.batch_alter_table("incoming_emails", schema=None) as batch_op:
        batch_op.create_index("ix_incoming_emails_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_incoming_emails_route_status", ["route", "status"], unique=False)

    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("rate_per_s", sa.Float(), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("refilled_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.Column("paused_until", pipeline.db.types.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_buckets")),
    )
    op.create_table(
        "email_backups",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=True),
        sa.Column("graph_message_id", sa.String(length=512), nullable=False),
        sa.Column("compressed_blob", sa.LargeBinary(), nullable=False),
        sa.Column("compression", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("checksum", sa.String(length=64), nullable=False),
        sa.Column("encryption", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incoming_email_id"],
            ["incoming_emails.id"],
            name=op.f("fk_email_backups_incoming_email_id_incoming_emails"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_backups")),
        sa.UniqueConstraint("graph_message_id", name=op.f("uq_email_backups_graph_message_id")),
    )
    op.create_table(
        "file_uploads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=False),
        sa.Column("attachment_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("draft_id", sa.String(length=512), nullable=True),
        sa.Column("upload_url", sa.Text(), nullable=True),
        sa.Column("bytes_confirmed", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("graph_attachment_id", sa.Text(), nullable=True),
        sa.Column("updated_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incoming_email_id"],
            ["incoming_emails.id"],
            name=op.f("fk_file_uploads_incoming_email_id_incoming_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_uploads")),
        sa.UniqueConstraint(
            "incoming_email_id",
            "attachment_index",
            name=op.f("uq_file_uploads_incoming_email_id_attachment_index"),
        ),
    )
    op.create_table(
        "sent_emails",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("correlation_key", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("graph_draft_id", sa.String(length=512), nullable=True),
        sa.Column("graph_message_id", sa.String(length=512), nullable=True),
        sa.Column("internet_message_id", sa.String(length=998), nullable=True),
        sa.Column("recovered", sa.Boolean(), nullable=False),
        sa.Column("sent_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incoming_email_id"],
            ["incoming_emails.id"],
            name=op.f("fk_sent_emails_incoming_email_id_incoming_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sent_emails")),
        sa.UniqueConstraint("incoming_email_id", name=op.f("uq_sent_emails_incoming_email_id")),
    )
    op.create_table(
        "worker_receipts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("incoming_email_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=False),
        sa.Column("received_at", pipeline.db.types.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incoming_email_id"],
            ["incoming_emails.id"],
            name=op.f("fk_worker_receipts_incoming_email_id_incoming_emails"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_receipts")),
        sa.UniqueConstraint(
            "incoming_email_id",
            "attempt",
            "pool",
            name=op.f("uq_worker_receipts_incoming_email_id_attempt_pool"),
        ),
    )


def downgrade() -> None:

    op.drop_table("worker_receipts")
    op.drop_table("sent_emails")
    op.drop_table("file_uploads")
    op.drop_table("email_backups")
    op.drop_table("rate_buckets")
    with op.batch_alter_table("incoming_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_incoming_emails_route_status")
        batch_op.drop_index("ix_incoming_emails_due")

    op.drop_table("incoming_emails")
    with op.batch_alter_table("email_events", schema=None) as batch_op:
        batch_op.drop_index("ix_email_events_email_time")

    op.drop_table("email_events")
    with op.batch_alter_table("dlq", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dlq_publisher_message_id"))
        batch_op.drop_index(batch_op.f("ix_dlq_incoming_email_id"))

    op.drop_table("dlq")
