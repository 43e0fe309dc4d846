"""Run ``mailpipe`` subcommands in-process, as an operator would type them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random

import typer
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from pipeline.archive import Archive, ArchiveWriter, StoredBlob
from pipeline.backups import backup_context, store_parts
from pipeline.cli import ops
from pipeline.crypto import KeyRing
from pipeline.db.models import EmailBackup


def ops_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """mailpipe (test copy with the ops commands)."""

    ops.register(app)
    return app


async def invoke(args: list[str], env: dict[str, str]) -> Result:
    """Run the command in a thread: it runs its own event loop with ``asyncio.run``."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, ops_app(), args, env=env, catch_exceptions=False)


def key(seed: int) -> bytes:
    return hashlib.sha256(f"test key {seed}".encode()).digest()


def keys_env(*named: tuple[str, bytes]) -> str:
    return ",".join(f"{key_id}:{base64.b64encode(raw).decode()}" for key_id, raw in named)


def mime(n: int, padding: int = 0) -> bytes:
    """A small message; with ``padding`` bytes of incompressible base64 it is stored in parts."""
    lines = base64.encodebytes(random.Random(n).randbytes(padding * 3 // 4)).replace(b"\n", b"\r\n")
    return f"From: a@contoso.example\r\nSubject: backup {n}\r\n\r\nbody {n}\r\n".encode() + lines


async def add_backup(
    sessions: async_sessionmaker[AsyncSession],
    n: int,
    keyring: KeyRing | None,
    key_id: str | None = None,
    *,
    padding: int = 0,
) -> int:
    """Store ``mime(n, padding)`` as the backup step does; ``key_id`` picks a key of ``keyring``."""
    content = mime(n, padding)
    graph_id = f"AAMk-test-{n}"
    ring = KeyRing(keyring.keys, key_id or keyring.current) if keyring is not None else None
    writer = ArchiveWriter(ring, backup_context(graph_id))
    for at in range(0, len(content), 65536):
        writer.write(content[at : at + 65536])
    archive = writer.finish()
    with archive.blob as blob:
        return await _insert(sessions, graph_id, archive, blob)


async def _insert(sessions: async_sessionmaker[AsyncSession], graph_id: str, archive: Archive, blob: StoredBlob) -> int:
    async with sessions.begin() as session:
        row = EmailBackup(
            graph_message_id=graph_id,
            compressed_blob=b"" if blob.parts else blob.inline(),
            compression="gzip",
            size=archive.size,
            checksum=archive.checksum,
            encryption=blob.encryption,
            key_id=blob.key_id,
            parts=blob.parts,
        )
        session.add(row)
        await session.flush()
        await store_parts(session, row.id, blob)
        return row.id
