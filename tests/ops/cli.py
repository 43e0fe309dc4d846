"""Run ``mailpipe`` subcommands in-process, as an operator would type them."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib

import typer
from click.testing import Result
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from pipeline.backups import backup_context
from pipeline.cli import ops
from pipeline.crypto import AES_GCM, KeyRing
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


def mime(n: int) -> bytes:
    return f"From: a@contoso.example\r\nSubject: backup {n}\r\n\r\nbody {n}\r\n".encode()


async def add_backup(
    sessions: async_sessionmaker[AsyncSession], n: int, keyring: KeyRing | None, key_id: str | None = None
) -> int:
    """Store a backup the way the backup step does; ``key_id`` picks a key of ``keyring``."""
    content = mime(n)
    blob = gzip.compress(content, mtime=0)
    graph_id = f"AAMk-test-{n}"
    encryption, used = "none", None
    if keyring is not None:
        ring = KeyRing(keyring.keys, key_id or keyring.current)
        blob, used = ring.seal(blob, backup_context(graph_id))
        encryption = AES_GCM
    async with sessions.begin() as session:
        row = EmailBackup(
            graph_message_id=graph_id,
            compressed_blob=blob,
            compression="gzip",
            size=len(content),
            checksum=hashlib.sha256(content).hexdigest(),
            encryption=encryption,
            key_id=used,
        )
        session.add(row)
        await session.flush()
        return row.id
