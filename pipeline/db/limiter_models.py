"""Tables of the shared Graph limiter that are not in :mod:`pipeline.db.models`.

``rate_buckets`` (the token buckets) lives in :mod:`pipeline.db.models`; this module adds
``rate_leases``: one row per Graph call in flight, which is how the per-mailbox concurrency cap
holds across processes. A lease carries an expiry that its live holder keeps pushing forward,
so the lease of a process that was killed frees itself once ``expires_at`` has passed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models import Base
from pipeline.db.types import UtcDateTime, utcnow

__all__ = ["RateLease"]


class RateLease(Base):
    """One concurrency slot of one bucket (a sender mailbox), held by one in-flight call."""

    __tablename__ = "rate_leases"
    __table_args__ = (
        # The grant counts live leases of one key; the heartbeat deletes expired ones.
        Index("ix_rate_leases_key_expires_at", "key", "expires_at"),
        Index("ix_rate_leases_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    key: Mapped[str] = mapped_column(String(320))
    #: ``host:pid`` of the process holding the lease; for operators, never used for decisions.
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
