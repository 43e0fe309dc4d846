"""The tables. Names are part of the operator contract: tools and runbooks query them directly.

Lifecycle of one ``incoming_emails`` row (``status``)::

    received --scheduler--> dispatched --worker receipt--> sending --Graph 202--> sent
       ^                        |                             |                     |
       |                        +------ transient error ------+---> retry_wait -----+ (due again)
       |                                                                            v
    cancelled (CancelEmail before dispatch)        sent --backup--> backed_up   (backup_wait on error)
    failed (dead-lettered: permanent error or attempts exhausted)

Every change of ``status`` also appends one row to ``email_events``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.db.types import JsonDocument, UtcDateTime, utcnow

__all__ = [
    "Base",
    "DeadLetter",
    "EmailBackup",
    "EmailBackupPart",
    "EmailEvent",
    "EmailStatus",
    "FileUpload",
    "IncomingEmail",
    "RateBucket",
    "Route",
    "SentEmail",
    "WorkerReceipt",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class EmailStatus(StrEnum):
    RECEIVED = "received"
    DISPATCHED = "dispatched"
    SENDING = "sending"
    RETRY_WAIT = "retry_wait"
    SENT = "sent"
    BACKUP_WAIT = "backup_wait"
    BACKED_UP = "backed_up"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Route(StrEnum):
    """The routing key of a dispatch on ``mail.dispatch``; also the worker pool's name."""

    NO_ATTACHMENT = "no-attachment"
    ATTACHMENT = "attachment"
    BACKUP = "backup"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class IncomingEmail(Base):
    __tablename__ = "incoming_emails"
    __table_args__ = (
        Index("ix_incoming_emails_due", "status", "next_attempt_at"),
        Index("ix_incoming_emails_route_status", "route", "status"),
        # The scheduler's claim order over due emails only (migration 0004).
        Index(
            "ix_incoming_emails_claim",
            "route",
            "priority",
            "next_attempt_at",
            "created_at",
            postgresql_where=text("status IN ('received', 'retry_wait')"),
            sqlite_where=text("status IN ('received', 'retry_wait')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    publisher_message_id: Mapped[str] = mapped_column(String(255), unique=True)
    #: "publisher" when the publisher gave the key, "derived" when mailpipe hashed the payload.
    idempotency_source: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    status: Mapped[str] = mapped_column(String(16), default=EmailStatus.RECEIVED)
    route: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str] = mapped_column(String(320))
    priority: Mapped[int] = mapped_column(Integer, default=5)
    send_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: When the scheduler may dispatch (or re-dispatch) this email next.
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    backup_attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The key Graph stores on the message (extended property + x- header) to find it again.
    correlation_key: Mapped[str] = mapped_column(String(64), unique=True)
    graph_draft_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: Set just before a send call; still set on re-entry means the outcome is unknown.
    send_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    #: No longer written (see :mod:`pipeline.steps.ingest`); dropped once no running version writes it.
    receipt_confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class WorkerReceipt(Base):
    """A worker's note that it took one dispatch; unique per email and attempt."""

    __tablename__ = "worker_receipts"
    __table_args__ = (UniqueConstraint("incoming_email_id", "attempt", "pool"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incoming_emails.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(16))
    worker: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FileUpload(Base):
    """Progress of one attachment of one email onto its Graph draft."""

    __tablename__ = "file_uploads"
    __table_args__ = (UniqueConstraint("incoming_email_id", "attachment_index"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incoming_emails.id", ondelete="CASCADE"))
    attachment_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    draft_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    upload_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    bytes_confirmed: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: pending | uploading | done
    status: Mapped[str] = mapped_column(String(16), default="pending")
    graph_attachment_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SentEmail(Base):
    __tablename__ = "sent_emails"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("incoming_emails.id", ondelete="CASCADE"), unique=True
    )
    mailbox: Mapped[str] = mapped_column(String(320))
    correlation_key: Mapped[str] = mapped_column(String(64))
    #: sendMail | draft
    method: Mapped[str] = mapped_column(String(16))
    graph_draft_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    #: The Sent Items copy's id; found by correlation key after the send (it differs from the draft's).
    graph_message_id: Mapped[str | None] = mapped_column(String(512), nullable=True)
    internet_message_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    #: True when the send was found in Sent Items by the duplicate check rather than sent by this attempt.
    recovered: Mapped[bool] = mapped_column(default=False)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class EmailBackup(Base):
    __tablename__ = "email_backups"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("incoming_emails.id", ondelete="SET NULL"), nullable=True
    )
    graph_message_id: Mapped[str] = mapped_column(String(512), unique=True)
    compressed_blob: Mapped[bytes] = mapped_column(LargeBinary)
    compression: Mapped[str] = mapped_column(String(16), default="gzip")
    #: Size of the MIME before compression, in bytes.
    size: Mapped[int] = mapped_column(BigInteger)
    #: sha256 hex of the MIME before compression.
    checksum: Mapped[str] = mapped_column(String(64))
    #: none | aes-256-gcm
    encryption: Mapped[str] = mapped_column(String(16), default="none")
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    #: 0: the blob is ``compressed_blob``. N: ``compressed_blob`` is empty and the blob is the
    #: concatenation of this backup's N ``email_backup_parts`` rows, in ``seq`` order.
    parts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class EmailBackupPart(Base):
    """One piece of a backup too large to store in its row (see :mod:`pipeline.archive`)."""

    __tablename__ = "email_backup_parts"

    backup_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("email_backups.id", ondelete="CASCADE"),
        primary_key=True,
    )
    #: 0, 1, ... N - 1.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class DeadLetter(Base):
    __tablename__ = "dlq"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True, index=True)
    publisher_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    reason: Mapped[str] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text)
    #: The raw body as received (may be invalid JSON), for triage; cut to a sane size.
    raw_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    mailbox: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class EmailEvent(Base):
    """Append-only timeline: one row per state change of an email."""

    __tablename__ = "email_events"
    __table_args__ = (Index("ix_email_events_email_time", "incoming_email_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    incoming_email_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    publisher_message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    event: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RateBucket(Base):
    """One token bucket of the shared Graph limiter (per mailbox, plus ``*`` overall)."""

    __tablename__ = "rate_buckets"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    rate_per_s: Mapped[float] = mapped_column(Float)
    burst: Mapped[int] = mapped_column(Integer)
    max_concurrency: Mapped[int] = mapped_column(Integer)
    refilled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    paused_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
