"""Retention: forget what no longer needs keeping, in small transactions, resumably.

Three rules, each with its own age (``MAILPIPE_*_RETENTION_DAYS``):

* ``email_backups`` rows created more than ``backup_retention_days`` ago are deleted;
* the ``payload`` of finished emails (``backed_up``, ``failed``, ``cancelled``) last updated
  more than ``payload_retention_days`` ago is replaced by ``{"_mailpipe_retention": {...}}``.
  The row itself stays: its ``publisher_message_id`` is what recognises a re-published
  SendEmail as a duplicate, so deleting it would let the email be sent again;
* ``email_events`` rows older than ``event_retention_days`` are deleted.

Each batch (``batch_size`` rows) is one transaction, so a crash or a stop loses at most the
batch in progress and the next run continues where this one stopped (every rule selects only
what is still to do). On PostgreSQL each batch holds an advisory lock, so scheduler replicas
running retention at the same time take turns instead of fighting over the same rows.

It runs in the scheduler role every ``retention_interval_s`` (:func:`run_forever`) and on
demand with ``mailpipe retention run [--dry-run]``.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.db.errors import store_errors
from pipeline.db.models import EmailBackup, EmailBackupPart, EmailEvent, EmailStatus, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.errors import TransientError
from pipeline.settings import Settings

__all__ = ["FINISHED", "PAYLOAD_MARKER", "RetentionReport", "run_forever", "run_retention"]

log = structlog.get_logger(__name__)

#: The key of the object that replaces a cleared payload.
PAYLOAD_MARKER = "_mailpipe_retention"
FINISHED = (EmailStatus.BACKED_UP, EmailStatus.FAILED, EmailStatus.CANCELLED)
DEFAULT_BATCH = 500
_LOCK_KEY = zlib.crc32(b"mailpipe.retention")


@dataclass(frozen=True)
class RetentionReport:
    """Rows deleted or cleared by one run (or that would be, with ``dry_run``)."""

    backups: int
    payloads: int
    events: int
    dry_run: bool


def _cutoff(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def _old_backups(cutoff: datetime) -> Select[Any]:
    return select(EmailBackup.id).where(EmailBackup.created_at < cutoff)


def _old_payloads(cutoff: datetime) -> Select[Any]:
    return select(IncomingEmail.id).where(
        IncomingEmail.status.in_(FINISHED),
        IncomingEmail.updated_at < cutoff,
        IncomingEmail.payload[PAYLOAD_MARKER].as_string().is_(None),
    )


def _old_events(cutoff: datetime) -> Select[Any]:
    return select(EmailEvent.id).where(EmailEvent.created_at < cutoff)


async def _lock(session: AsyncSession) -> None:
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


async def _count(sessions: async_sessionmaker[AsyncSession], query: Select[Any]) -> int:
    async with store_errors("retention count"), sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(query.subquery())) or 0)


async def _in_batches(
    sessions: async_sessionmaker[AsyncSession], query: Select[Any], apply: Any, batch_size: int
) -> int:
    """Run ``apply(session, ids)`` on batches of ``query``'s ids until none are left."""
    total = 0
    while True:
        async with store_errors("retention"), sessions.begin() as session:
            await _lock(session)
            ids = list((await session.execute(query.limit(batch_size))).scalars())
            if ids:
                await apply(session, ids)
        total += len(ids)
        if len(ids) < batch_size:
            return total


async def _delete_backups(session: AsyncSession, ids: list[int]) -> None:
    # The foreign key cascades too, but only where SQLite's foreign_keys pragma is on.
    await session.execute(delete(EmailBackupPart).where(EmailBackupPart.backup_id.in_(ids)))
    await session.execute(delete(EmailBackup).where(EmailBackup.id.in_(ids)))


async def _delete_events(session: AsyncSession, ids: list[int]) -> None:
    await session.execute(delete(EmailEvent).where(EmailEvent.id.in_(ids)))


async def _clear_payloads(session: AsyncSession, ids: list[uuid.UUID]) -> None:
    marker = {PAYLOAD_MARKER: {"cleared_at": utcnow().isoformat()}}
    # updated_at is left alone: it is when the email finished, which the rule is about.
    await session.execute(
        update(IncomingEmail)
        .where(IncomingEmail.id.in_(ids))
        .values(payload=marker, updated_at=IncomingEmail.updated_at)
    )


async def run_retention(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> RetentionReport:
    """Apply the three rules once (see the module docstring); ``dry_run`` only counts."""
    now = now or utcnow()
    backups = _old_backups(_cutoff(now, settings.backup_retention_days))
    payloads = _old_payloads(_cutoff(now, settings.payload_retention_days))
    events = _old_events(_cutoff(now, settings.event_retention_days))
    if dry_run:
        return RetentionReport(
            await _count(sessions, backups),
            await _count(sessions, payloads),
            await _count(sessions, events),
            True,
        )
    return RetentionReport(
        backups=await _in_batches(sessions, backups.order_by(EmailBackup.id), _delete_backups, batch_size),
        payloads=await _in_batches(sessions, payloads.order_by(IncomingEmail.updated_at), _clear_payloads, batch_size),
        events=await _in_batches(sessions, events.order_by(EmailEvent.id), _delete_events, batch_size),
        dry_run=False,
    )


async def run_forever(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Run retention soon after start, then every ``retention_interval_s``; never raises."""
    # The first run comes early so that pods restarted more often than the interval still run it.
    await asyncio.sleep(min(30.0, settings.retention_interval_s))
    while True:
        try:
            report = await run_retention(sessions, settings)
        except TransientError as exc:
            log.warning("retention run failed; will retry", reason=exc.reason, error=str(exc))
        except Exception:  # a bug must not stop the scheduler role; the traceback is logged
            log.exception("retention run crashed; will retry")
        else:
            if report.backups or report.payloads or report.events:
                log.info(
                    "retention applied",
                    backups_deleted=report.backups,
                    payloads_cleared=report.payloads,
                    events_deleted=report.events,
                )
        await asyncio.sleep(settings.retention_interval_s)
