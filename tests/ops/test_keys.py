"""``mailpipe keys rotate`` and ``mailpipe backup get`` against real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from pipeline.archive import PART_BYTES
from pipeline.backups import open_backup, read_backup
from pipeline.crypto import AES_GCM, parse_keys
from pipeline.db.engine import create_sessionmaker
from pipeline.db.models import EmailBackup, EmailBackupPart, IncomingEmail
from tests.ops.cli import add_backup, invoke, key, keys_env, mime
from tests.support import EMULATOR_TOKEN, Publisher, pipeline_settings, running, sample_email, wait_until

OLD = ("k2025", key(1))
NEW = ("k2026", key(2))


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def test_rotation_reseals_every_backup_and_the_old_key_can_then_be_dropped(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    old_ring = parse_keys(keys_env(OLD))
    ids = [await add_backup(sessions, n, old_ring) for n in range(5)]
    ids += [await add_backup(sessions, n, None) for n in range(5, 7)]  # stored before encryption was on
    env = {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW, OLD)}

    result = await invoke(["keys", "rotate", "--batch-size", "2"], env)
    assert result.exit_code == 0, result.output
    assert "re-encrypted 7 backup(s) with key 'k2026'" in result.output
    again = await invoke(["keys", "rotate"], env)  # resumable: nothing is left to do
    assert "re-encrypted 0 backup(s)" in again.output

    new_only = parse_keys(keys_env(NEW))
    async with sessions() as session:
        rows = (await session.execute(select(EmailBackup).order_by(EmailBackup.id))).scalars().all()
    assert [row.id for row in rows] == ids
    for n, row in enumerate(rows):
        assert (row.encryption, row.key_id) == (AES_GCM, "k2026")
        assert open_backup(row, new_only) == mime(n)

    # The old key is gone from the configuration; backups still open through the CLI.
    out = tmp_path / "six.eml"
    got = await invoke(
        ["backup", "get", "AAMk-test-6", "--out", str(out)],
        {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW)},
    )
    assert got.exit_code == 0, got.output
    assert out.read_bytes() == mime(6)


async def test_rotation_reseals_backups_stored_in_parts_and_replaces_their_parts(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    padding = 3 * PART_BYTES  # base64 of random bytes: gzip leaves about 2.3 MiB, 3 parts
    sealed = await add_backup(sessions, 1, parse_keys(keys_env(OLD)), padding=padding)
    plain = await add_backup(sessions, 2, None, padding=padding)
    env = {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW, OLD)}
    result = await invoke(["keys", "rotate"], env)
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2 backup(s)" in result.output

    new_only = parse_keys(keys_env(NEW))
    async with sessions() as session:
        rows = (await session.execute(select(EmailBackup).order_by(EmailBackup.id))).scalars().all()
        part_rows = await session.scalar(select(func.count()).select_from(EmailBackupPart))
    assert [row.id for row in rows] == [sealed, plain]
    for n, row in zip((1, 2), rows, strict=True):
        assert (row.encryption, row.key_id, row.compressed_blob) == (AES_GCM, "k2026", b"")
        pieces: list[bytes] = []
        assert await read_backup(sessions, row, new_only, pieces.append) == len(mime(n, padding))
        assert b"".join(pieces) == mime(n, padding)
    assert all(row.parts >= 2 for row in rows)
    assert part_rows == sum(row.parts for row in rows)  # the old parts are gone

    out = tmp_path / "one.eml"
    got = await invoke(
        ["backup", "get", "AAMk-test-1", "--out", str(out)],
        {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW)},
    )
    assert got.exit_code == 0, got.output
    assert out.read_bytes() == mime(1, padding)


async def test_backup_get_refuses_a_backup_with_a_part_altered_or_missing_and_leaves_no_file(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    ring = parse_keys(keys_env(NEW))
    altered = await add_backup(sessions, 1, ring, padding=2 * PART_BYTES)
    cut = await add_backup(sessions, 2, ring, padding=2 * PART_BYTES)
    async with sessions.begin() as session:
        part = (
            await session.execute(
                select(EmailBackupPart).where(EmailBackupPart.backup_id == altered, EmailBackupPart.seq == 1)
            )
        ).scalar_one()
        part.data = part.data[:99] + bytes([part.data[99] ^ 0x01]) + part.data[100:]
        parts = await session.scalar(select(EmailBackup.parts).where(EmailBackup.id == cut))
        assert parts is not None
        assert parts >= 2
        await session.execute(
            delete(EmailBackupPart).where(EmailBackupPart.backup_id == cut, EmailBackupPart.seq == parts - 1)
        )
    env = {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW)}
    outputs = tmp_path / "out"
    outputs.mkdir()
    missing = f"missing part {parts - 1} of {parts}"
    for ident, why in (("AAMk-test-1", "authentication failed"), ("AAMk-test-2", missing)):
        result = await invoke(["backup", "get", ident, "--out", str(outputs / f"{ident}.eml")], env)
        assert result.exit_code == 1, result.output
        assert why in result.output
        assert list(outputs.iterdir()) == []  # neither the .eml nor its .partial


async def test_rotation_reports_rows_it_cannot_open_and_exits_non_zero(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    lost = parse_keys(keys_env(("k-lost", key(9))))
    await add_backup(sessions, 1, lost)
    await add_backup(sessions, 2, None)
    result = await invoke(
        ["keys", "rotate"], {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW)}
    )
    assert result.exit_code == 1
    assert "re-encrypted 1 backup(s)" in result.output
    assert "'k-lost' is not configured" in result.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_backup_get_refuses_a_tampered_backup(
    database_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    ring = parse_keys(keys_env(NEW))
    backup_id = await add_backup(sessions, 1, ring)
    other_id = await add_backup(sessions, 2, ring)
    env = {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys_env(NEW)}
    async with sessions.begin() as session:
        blob = await session.scalar(select(EmailBackup.compressed_blob).where(EmailBackup.id == backup_id))
        assert blob is not None
        flipped = blob[:20] + bytes([blob[20] ^ 0x01]) + blob[21:]
        await session.execute(update(EmailBackup).where(EmailBackup.id == backup_id).values(compressed_blob=flipped))
        # A valid blob moved onto another row fails too: it is bound to its Graph message id.
        await session.execute(update(EmailBackup).where(EmailBackup.id == other_id).values(compressed_blob=blob))

    for ident in ("AAMk-test-1", "AAMk-test-2"):
        out = tmp_path / f"{ident}.eml"
        result = await invoke(["backup", "get", ident, "--out", str(out)], env)
        assert result.exit_code == 1, result.output
        assert "authentication failed" in result.output
        assert not out.exists()
    missing = await invoke(["backup", "get", "no-such-message", "--out", str(tmp_path / "x.eml")], env)
    assert missing.exit_code == 1
    assert "no backup for 'no-such-message'" in missing.output


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_backup_get_writes_exactly_the_mime_graph_serves(
    amqp_url: str, database_url: str, emulator: Any, tmp_path: Path
) -> None:
    keys = keys_env(NEW)
    settings = pipeline_settings(amqp_url, database_url, emulator, encryption_keys=keys)
    # No attachment: the emulator draws a new multipart boundary each time it renders, so only a
    # single-part message is byte-identical across two fetches.
    body = {"contentType": "text", "content": "Grüße — the body, with non-ASCII text.\n" * 20}
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish(sample_email(1, body=body))

        async def backed_up() -> bool:
            async with ctx.sessions() as session:
                return await session.scalar(select(IncomingEmail.status)) == "backed_up"

        await wait_until(backed_up, timeout_s=60, what="the email backed up")
        async with ctx.sessions() as session:
            email = (await session.execute(select(IncomingEmail))).scalar_one()
            backup = (await session.execute(select(EmailBackup))).scalar_one()
    assert (backup.encryption, backup.key_id) == (AES_GCM, "k2026")
    served = httpx.get(
        f"{emulator.base_url}/users/{email.mailbox}/messages/{backup.graph_message_id}/$value",
        headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"},
    )
    served.raise_for_status()
    env = {"MAILPIPE_DATABASE_URL": database_url, "MAILPIPE_ENCRYPTION_KEYS": keys}
    for ident in (str(email.id), backup.graph_message_id):
        out = tmp_path / "copy.eml"
        result = await invoke(["backup", "get", ident, "--out", str(out)], env)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == served.content
        assert b"Subject: Invoice 1" in out.read_bytes()
