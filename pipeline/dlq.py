"""Operator actions on dead letters (the ``dlq`` table): find, replay, purge.

Replaying a dead letter never sends an email by itself; it puts the work back where the normal
pipeline picks it up, so every exactly-once guard still applies:

* an email that exists and is ``failed`` goes back to ``retry_wait`` with ``next_attempt_at =
  now`` and ``attempt_count = 0``; the scheduler dispatches it again and the send step's
  duplicate check (the correlation key in Sent Items) stops a second send. An email that was
  already sent and failed at the backup step goes back to ``backup_wait`` instead;
* a dead letter without an email (the input was invalid at ingest) is re-published as its
  original body to ``mail.commands`` only if the body validates now; ingest de-duplicates it
  by ``publisher_message_id``. Otherwise it is refused with the validation error.

Purging only sets ``purged_at``: the row stays for audit, and nothing is removed from RabbitMQ.
The broker's copy in ``mail.dead-letter`` is there to be browsed in the management UI and may
be purged there independently. Each replay or purge appends a ``dlq_replayed`` or
``dlq_purged`` row to ``email_events``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.db.errors import store_errors
from pipeline.db.events import record_event
from pipeline.db.models import DeadLetter, EmailStatus, IncomingEmail, SentEmail
from pipeline.db.types import utcnow
from pipeline.errors import InvalidMessage
from pipeline.messages import CancelEmail
from pipeline.settings import Settings
from pipeline.steps.ingest import parse_send_email

__all__ = ["Action", "Plan", "Republish", "Selection", "find", "get", "parse_age", "plan", "purge", "replay"]

#: Publishes ``body`` to ``mail.commands`` with ``routing_key`` and ``message_id``.
Republish = Callable[[bytes, str, str], Awaitable[None]]

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or sums such as ``1h30m``; ValueError otherwise."""
    parts = _AGE.findall(text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ValueError(f"bad duration {text!r}: use e.g. 30s, 15m, 2h, 7d or 1h30m")
    return timedelta(seconds=sum(float(n) * _UNIT_S[u] for n, u in parts))


@dataclass(frozen=True)
class Selection:
    """Which dead letters an action applies to: explicit ids and/or filters (all must match)."""

    ids: tuple[int, ...] = ()
    reason: str | None = None
    step: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    sender: str | None = None
    limit: int | None = None
    include_purged: bool = False

    @property
    def has_criteria(self) -> bool:
        """False when nothing narrows the selection (replay and purge refuse "everything")."""
        filters = (self.reason, self.step, self.older_than, self.newer_than, self.sender)
        return bool(self.ids) or any(f is not None for f in filters)

    def query(self, *, pending_only: bool = False) -> Select[tuple[DeadLetter]]:
        """The rows, newest first. ``pending_only`` drops replayed rows unless ids name them."""
        now = utcnow()
        stmt = select(DeadLetter).order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc())
        if self.ids:
            stmt = stmt.where(DeadLetter.id.in_(self.ids))
        if self.reason is not None:
            stmt = stmt.where(DeadLetter.reason == self.reason)
        if self.step is not None:
            stmt = stmt.where(DeadLetter.step == self.step)
        if self.older_than is not None:
            stmt = stmt.where(DeadLetter.created_at <= now - self.older_than)
        if self.newer_than is not None:
            stmt = stmt.where(DeadLetter.created_at >= now - self.newer_than)
        if self.sender is not None:
            stmt = stmt.where(DeadLetter.mailbox == self.sender.strip().lower())
        if not self.include_purged and not self.ids:
            stmt = stmt.where(DeadLetter.purged_at.is_(None))
        if pending_only and not self.ids:
            stmt = stmt.where(DeadLetter.replayed_at.is_(None))
        return stmt.limit(self.limit) if self.limit is not None else stmt


async def find(sessions: async_sessionmaker[AsyncSession], selection: Selection) -> list[DeadLetter]:
    async with store_errors("dlq list"), sessions() as session:
        return list((await session.scalars(selection.query())).all())


async def get(sessions: async_sessionmaker[AsyncSession], dead_letter_id: int) -> DeadLetter | None:
    async with store_errors("dlq show"), sessions() as session:
        return await session.get(DeadLetter, dead_letter_id)


class Action(StrEnum):
    RETRY = "retry"  # the failed email is due again
    BACKUP = "backup-again"  # the email was sent; only its backup is due again
    REPUBLISH = "republish"  # the original command goes back to mail.commands
    REFUSED = "refused"


@dataclass(frozen=True)
class Plan:
    """What replay does (or, for a dry run, would do) with one dead letter, and why."""

    dead_letter_id: int
    action: Action
    detail: str
    #: For :attr:`Action.REPUBLISH`: where and what to publish, under which message id.
    routing_key: str = ""
    body: bytes = field(default=b"", repr=False)
    message_id: str = ""


async def plan(sessions: async_sessionmaker[AsyncSession], settings: Settings, selection: Selection) -> list[Plan]:
    """Decide the replay of each selected dead letter without changing anything."""
    async with store_errors("dlq replay"), sessions() as session:
        rows = (await session.scalars(selection.query(pending_only=True))).all()
        return [await _plan_one(session, settings, row) for row in rows]


async def _plan_one(session: AsyncSession, settings: Settings, row: DeadLetter) -> Plan:
    if row.purged_at is not None:
        return Plan(row.id, Action.REFUSED, f"purged at {row.purged_at:%Y-%m-%d %H:%M:%S}")
    if row.replayed_at is not None:
        return Plan(row.id, Action.REFUSED, f"already replayed at {row.replayed_at:%Y-%m-%d %H:%M:%S}")
    if row.incoming_email_id is not None:
        email = await session.get(IncomingEmail, row.incoming_email_id)
        if email is None:
            return Plan(row.id, Action.REFUSED, f"email {row.incoming_email_id} no longer exists")
        if email.status != EmailStatus.FAILED:
            return Plan(row.id, Action.REFUSED, f"email is {email.status}, not failed")
        sent = await session.scalar(select(exists().where(SentEmail.incoming_email_id == email.id)))
        if sent or row.step == "backup":
            return Plan(row.id, Action.BACKUP, f"email {email.id} was sent; its backup is due again")
        return Plan(row.id, Action.RETRY, f"email {email.id} is due again (attempts reset)")
    return _plan_republish(settings, row)


def _plan_republish(settings: Settings, row: DeadLetter) -> Plan:
    if row.step not in ("ingest", "cancel"):
        return Plan(row.id, Action.REFUSED, f"a {row.step} message with no email row: nothing to replay")
    if row.raw_body is None:
        return Plan(row.id, Action.REFUSED, "no body was stored")
    body = row.raw_body.encode()
    try:
        if row.step == "ingest":
            parse_send_email(body, max_bytes=settings.max_message_bytes)
        else:
            CancelEmail.model_validate_json(body)
    except (InvalidMessage, ValidationError) as exc:
        return Plan(row.id, Action.REFUSED, f"still invalid: {exc}".replace("\n", " "))
    key = "send-email" if row.step == "ingest" else "cancel-email"
    return Plan(
        row.id,
        Action.REPUBLISH,
        f"body validates; to mail.commands/{key}",
        routing_key=key,
        body=body,
        message_id=row.publisher_message_id or f"dlq-replay:{row.id}",
    )


async def replay(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    selection: Selection,
    *,
    republish: Republish | None,
    dry_run: bool = False,
) -> list[Plan]:
    """Carry out :func:`plan` (unless ``dry_run``); returns each row's plan, refused ones included.

    A row is marked ``replayed_at`` only after its action took effect; a re-published body is
    published before the mark, so a crash in between re-publishes once more, which ingest drops.
    """
    plans = await plan(sessions, settings, selection)
    if dry_run:
        return plans
    done = []
    for item in plans:
        if item.action == Action.REPUBLISH:
            if republish is None:
                raise ValueError("replay needs a publisher for re-published bodies")
            await republish(item.body, item.routing_key, item.message_id)
        done.append(item if item.action == Action.REFUSED else await _apply(sessions, item))
    return done


async def _apply(sessions: async_sessionmaker[AsyncSession], item: Plan) -> Plan:
    now = utcnow()
    async with store_errors("dlq replay"), sessions.begin() as session:
        row = await session.get(DeadLetter, item.dead_letter_id, with_for_update=True)
        if row is None or row.replayed_at is not None:
            return Plan(item.dead_letter_id, Action.REFUSED, "replayed meanwhile by someone else")
        if item.action in (Action.RETRY, Action.BACKUP):
            values: dict[str, Any] = {"next_attempt_at": now, "updated_at": now}
            if item.action == Action.RETRY:
                values.update(status=EmailStatus.RETRY_WAIT, attempt_count=0)
            else:
                values.update(status=EmailStatus.BACKUP_WAIT, backup_attempt_count=0)
            result: Any = await session.execute(
                update(IncomingEmail)
                .where(IncomingEmail.id == row.incoming_email_id, IncomingEmail.status == EmailStatus.FAILED)
                .values(**values)
            )
            if result.rowcount == 0:
                return Plan(item.dead_letter_id, Action.REFUSED, "email is no longer failed")
        row.replayed_at = now
        await record_event(
            session,
            "dlq_replayed",
            email_id=row.incoming_email_id,
            publisher_message_id=row.publisher_message_id,
            dlq_id=row.id,
            action=str(item.action),
        )
    return item


async def purge(
    sessions: async_sessionmaker[AsyncSession], selection: Selection, *, dry_run: bool = False
) -> list[DeadLetter]:
    """Mark the selected, not yet purged rows ``purged_at`` (rows are kept); returns them."""
    async with store_errors("dlq purge"), sessions.begin() as session:
        rows = [r for r in (await session.scalars(selection.query())).all() if r.purged_at is None]
        if dry_run:
            return rows
        now = utcnow()
        for row in rows:
            row.purged_at = now
            await record_event(
                session,
                "dlq_purged",
                email_id=row.incoming_email_id,
                publisher_message_id=row.publisher_message_id,
                dlq_id=row.id,
            )
        return rows
