"""Dead letters of every kind on the test database, and the ``mailpipe dlq`` command to run."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from pipeline.cli import dlq as dlq_cli
from pipeline.db.engine import create_engine, create_sessionmaker
from pipeline.db.models import DeadLetter, EmailStatus, IncomingEmail, Route, SentEmail
from pipeline.db.types import utcnow
from pipeline.settings import load_settings
from tests.support import sample_email

SENDER = "sender@contoso.example"


@dataclass(frozen=True)
class Seeded:
    """Ids of the seeded rows (dead letters by kind, and the emails behind them)."""

    send_failed: int  # a send that failed for good: the email exists, status failed
    backup_failed: int  # sent, then the backup failed: the email exists, status failed
    invalid: int  # invalid at ingest, still invalid: no email
    fixable: int  # failed at ingest, valid now: no email
    old: int  # an old dead letter of another sender
    send_email_id: uuid.UUID
    backup_email_id: uuid.UUID


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(load_settings(database_url=database_url))
    yield create_sessionmaker(engine)
    await engine.dispose()


def _email(n: int, status: str) -> IncomingEmail:
    now = utcnow()
    email_id = uuid.uuid4()
    return IncomingEmail(
        id=email_id, publisher_message_id=f"msg-{n}", idempotency_source="publisher", payload=sample_email(n),
        status=status, route=Route.NO_ATTACHMENT, mailbox=SENDER, attempt_count=8, backup_attempt_count=10,
        last_error="boom", correlation_key=email_id.hex, next_attempt_at=now, created_at=now, updated_at=now,
    )  # fmt: skip


def _dead(email: IncomingEmail | None, **values: Any) -> DeadLetter:
    base: dict[str, Any] = {
        "incoming_email_id": email.id if email else None,
        "publisher_message_id": email.publisher_message_id if email else None,
        "mailbox": SENDER if email else None,
        "attempts": 1,
        "last_error": "it failed",
        "created_at": utcnow(),
    }
    return DeadLetter(**{**base, **values})


@pytest.fixture
async def seeded(sessions: async_sessionmaker[AsyncSession]) -> Seeded:
    send, backup = _email(1, EmailStatus.FAILED), _email(2, EmailStatus.FAILED)
    fixable_body = json.dumps(sample_email(3, publisher_message_id="msg-3-fixed")).encode().decode()
    rows = [
        _dead(send, reason="graph-rejected", step="send:no-attachment", raw_body=json.dumps(send.payload)),
        _dead(backup, reason="graph-unavailable", step="backup", raw_body="{}"),
        _dead(None, reason="schema", step="ingest", raw_body='{"from": "not an address"}',
              publisher_message_id="msg-bad", last_error="SendEmail is invalid"),
        _dead(None, reason="not-json", step="ingest", raw_body=fixable_body,
              publisher_message_id="msg-3-fixed"),
        _dead(None, reason="schema", step="ingest", raw_body="{}", mailbox="other@contoso.example",
              created_at=utcnow() - timedelta(days=3)),
    ]  # fmt: skip
    async with sessions.begin() as session:
        session.add_all([send, backup])
        await session.flush()
        session.add(
            SentEmail(incoming_email_id=backup.id, mailbox=SENDER, correlation_key=backup.correlation_key,
                      method="sendMail")
        )  # fmt: skip
        session.add_all(rows)
        await session.flush()
        ids = [row.id for row in rows]
    send_failed, backup_failed, invalid, fixable, old = ids
    return Seeded(send_failed, backup_failed, invalid, fixable, old, send.id, backup.id)


def dlq_app() -> typer.Typer:
    app = typer.Typer()
    dlq_cli.register(app)
    return app


async def run_cli(database_url: str, *args: str, amqp_url: str | None = None) -> Any:
    """Run ``mailpipe dlq ARGS`` in a thread (it calls asyncio.run) against ``database_url``."""
    env = {"MAILPIPE_DATABASE_URL": database_url}
    if amqp_url is not None:
        env["MAILPIPE_AMQP_URL"] = amqp_url
    return await asyncio.to_thread(CliRunner().invoke, dlq_app(), ["dlq", *args], env=env)
