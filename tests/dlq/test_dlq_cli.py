"""``mailpipe dlq list|show|replay|purge`` against a real database (and RabbitMQ for re-publishing)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from pipeline.db.models import DeadLetter, EmailEvent, EmailStatus, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.dlq import parse_age
from tests.dlq.conftest import Seeded, dlq_app, run_cli
from tests.support import Publisher

Sessions = async_sessionmaker[AsyncSession]


def _ids(output: str) -> set[int]:
    """The ids in the first column of a printed table."""
    return {int(line.split()[1]) for line in output.splitlines() if line.startswith("│") and line.split()[1].isdigit()}


async def _snapshot(sessions: Sessions) -> tuple[list[Any], list[Any], int]:
    async with sessions() as session:
        dead = [(r.id, r.replayed_at, r.purged_at) for r in await session.scalars(select(DeadLetter))]
        emails = [(e.id, e.status, e.attempt_count) for e in await session.scalars(select(IncomingEmail))]
        events = len((await session.scalars(select(EmailEvent))).all())
    return sorted(dead), sorted(emails), events


async def test_list_filters_and_show(database_url: str, seeded: Seeded) -> None:
    everything = await run_cli(database_url, "list")
    assert everything.exit_code == 0, everything.output
    assert _ids(everything.output) == {
        seeded.send_failed,
        seeded.backup_failed,
        seeded.invalid,
        seeded.fixable,
        seeded.old,
    }
    cases = {
        ("--reason", "schema"): {seeded.invalid, seeded.old},
        ("--step", "backup"): {seeded.backup_failed},
        ("--older-than", "2d"): {seeded.old},
        ("--newer-than", "1h"): {seeded.send_failed, seeded.backup_failed, seeded.invalid, seeded.fixable},
        ("--sender", "Sender@Contoso.example"): {seeded.send_failed, seeded.backup_failed},
        ("--limit", "2"): {seeded.fixable, seeded.invalid},  # newest first
    }
    for args, expected in cases.items():
        result = await run_cli(database_url, "list", *args)
        assert _ids(result.output) == expected, (args, result.output)
    shown = await run_cli(database_url, "show", str(seeded.invalid))
    assert shown.exit_code == 0
    assert "last_error:\nSendEmail is invalid" in shown.output
    assert '"from": "not an address"' in shown.output
    missing = await run_cli(database_url, "show", "999999")
    assert (missing.exit_code, missing.output.strip()) == (2, "error: no dead letter with id 999999")


async def test_dry_runs_change_nothing(database_url: str, seeded: Seeded, sessions: Sessions) -> None:
    before = await _snapshot(sessions)
    replay = await run_cli(database_url, "replay", "--newer-than", "1h", "--dry-run")
    purge = await run_cli(database_url, "purge", "--reason", "schema", "--dry-run")
    assert "dry run, nothing changed: would replay 3, refused 1" in replay.output
    assert "dry run, nothing changed: would purge 2 dead letters" in purge.output
    assert await _snapshot(sessions) == before


async def test_replay_puts_a_failed_email_back_in_the_schedule(
    database_url: str, seeded: Seeded, sessions: Sessions
) -> None:
    started = utcnow()
    result = await run_cli(database_url, "replay", "--id", str(seeded.send_failed), "--id", str(seeded.backup_failed))
    assert result.exit_code == 0, result.output
    async with sessions() as session:
        send = await session.get(IncomingEmail, seeded.send_email_id)
        backup = await session.get(IncomingEmail, seeded.backup_email_id)
        dead = {d.id: d for d in await session.scalars(select(DeadLetter))}
        events = (await session.scalars(select(EmailEvent).where(EmailEvent.event == "dlq_replayed"))).all()
    # The unsent email is due again with fresh attempts; the sent one only needs its backup again
    assert send is not None and backup is not None
    assert (send.status, send.attempt_count) == (EmailStatus.RETRY_WAIT, 0)
    assert started - timedelta(seconds=1) <= send.next_attempt_at <= utcnow()
    assert (backup.status, backup.backup_attempt_count, backup.attempt_count) == (
        EmailStatus.BACKUP_WAIT,
        0,
        8,
    )
    assert dead[seeded.send_failed].replayed_at is not None
    assert dead[seeded.backup_failed].replayed_at is not None
    assert {(e.incoming_email_id, (e.detail or {})["action"]) for e in events} == {
        (seeded.send_email_id, "retry"),
        (seeded.backup_email_id, "backup-again"),
    }
    # And a second replay of the same row is refused
    again = await run_cli(database_url, "replay", "--id", str(seeded.send_failed))
    assert again.exit_code == 1
    assert "already replayed" in again.output


async def test_replay_refuses_a_body_that_is_still_invalid(
    database_url: str, seeded: Seeded, sessions: Sessions
) -> None:
    result = await run_cli(database_url, "replay", "--id", str(seeded.invalid))
    assert result.exit_code == 1
    assert "refused" in result.output
    assert "still invalid: SendEmail is invalid: from:" in result.output
    assert "subject: Field required" in result.output
    async with sessions() as session:
        row = await session.get(DeadLetter, seeded.invalid)
    assert row is not None and row.replayed_at is None


async def test_replay_republishes_a_body_that_validates_now(
    database_url: str, amqp_url: str, seeded: Seeded, sessions: Sessions
) -> None:
    result = await run_cli(database_url, "replay", "--id", str(seeded.fixable), amqp_url=amqp_url)
    assert result.exit_code == 0, result.output
    assert "republish" in result.output
    async with Publisher(amqp_url) as broker:
        messages = await broker.drain("mail.ingest")
    assert len(messages) == 1
    assert messages[0].message_id == "msg-3-fixed"
    assert json.loads(messages[0].body)["publisher_message_id"] == "msg-3-fixed"
    async with sessions() as session:
        row = await session.get(DeadLetter, seeded.fixable)
        event = await session.scalar(select(EmailEvent).where(EmailEvent.event == "dlq_replayed"))
    assert row is not None and row.replayed_at is not None
    assert event is not None and event.detail == {"dlq_id": seeded.fixable, "action": "republish"}


async def test_purge_needs_yes_marks_rows_and_keeps_them(database_url: str, seeded: Seeded, sessions: Sessions) -> None:
    refused = await run_cli(database_url, "purge", "--reason", "schema")
    assert (refused.exit_code, refused.output.count("\n")) == (2, 1)
    assert "--yes" in refused.output
    result = await run_cli(database_url, "purge", "--reason", "schema", "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 2 dead letters" in result.output
    async with sessions() as session:
        rows = {d.id: d for d in await session.scalars(select(DeadLetter))}
        events = (await session.scalars(select(EmailEvent).where(EmailEvent.event == "dlq_purged"))).all()
    assert rows[seeded.invalid].purged_at is not None and rows[seeded.old].purged_at is not None
    assert rows[seeded.send_failed].purged_at is None
    assert sorted((e.detail or {})["dlq_id"] for e in events) == sorted([seeded.invalid, seeded.old])
    # Purged rows leave the default listing but stay in the table
    assert seeded.invalid not in _ids((await run_cli(database_url, "list")).output)
    assert seeded.invalid in _ids((await run_cli(database_url, "list", "--all")).output)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["replay"], "give --id or a filter"),
        (["purge", "--yes"], "give --id or a filter"),
        (["replay", "--older-than", "2x"], "--older-than: bad duration '2x'"),
        (["list", "--newer-than", "soon"], "--newer-than: bad duration 'soon'"),
        (["list", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], problem: str) -> None:
    result = CliRunner().invoke(dlq_app(), ["dlq", *args])
    assert result.exit_code == 2
    assert problem in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_durations() -> None:
    assert parse_age("90s") == timedelta(seconds=90)
    assert parse_age("1h30m") == timedelta(minutes=90)
    assert parse_age("2d") == timedelta(days=2)
    assert parse_age("1.5h") == timedelta(minutes=90)
    for bad in ("", "h", "2x", "2h junk", "-1h"):
        with pytest.raises(ValueError, match="bad duration"):
            parse_age(bad)
