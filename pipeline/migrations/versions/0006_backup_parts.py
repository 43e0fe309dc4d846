"""backup parts: a backup larger than 1 MiB is stored in 1 MiB rows, not as one value

The backup worker held a sent email's whole MIME, its gzip and its sealed copy in memory, and
the driver another copy of the blob: archiving one email with a 100 MB file grew the worker
by 330-500 MiB, past the Helm chart's memory limit with two such emails at once. It now
streams the MIME through gzip and AES-GCM into a spool (:mod:`pipeline.archive`) and stores a
large archive as ``email_backup_parts`` rows. ``email_backups.parts`` says how many (0, the
default, for every backup stored before, and for any up to 1 MiB).

Both changes are additive: a worker of the previous version keeps writing whole backups, which
have ``parts = 0``. It cannot read a backup stored in parts (it sees an empty blob and fails
its checksum), so upgrade ``mailpipe backup get`` with the workers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_backups") as batch:
        batch.add_column(sa.Column("parts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.create_table(
        "email_backup_parts",
        sa.Column("backup_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["backup_id"],
            ["email_backups.id"],
            name=op.f("fk_email_backup_parts_backup_id_email_backups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("backup_id", "seq", name=op.f("pk_email_backup_parts")),
    )


def downgrade() -> None:
    op.drop_table("email_backup_parts")
    with op.batch_alter_table("email_backups") as batch:
        batch.drop_column("parts")
