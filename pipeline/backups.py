"""Stored backups: writing their parts, reading them back, re-sealing them under the current key.

A backup is ``gzip(MIME)``, sealed with AES-256-GCM when encryption is configured
(:mod:`pipeline.crypto`; the associated data is ``mailpipe-backup:{graph_message_id}``, which
binds the blob to its row), stored in its ``email_backups`` row or, past 1 MiB, in
``email_backup_parts`` rows (:mod:`pipeline.archive`). :func:`read_backup` undoes both piece by
piece and checks the MIME against the row's size and sha256, so a backup either comes back
exactly as stored or fails loudly; what it handed out before failing must be discarded.

:func:`rotate` re-encrypts, in batches of one transaction each, every backup not sealed with
the key ring's current key (older keys and unencrypted rows alike); a backup in parts is
re-sealed piece by piece into a spool, then its parts are replaced. It selects by state, so
after a crash or a stop running it again continues with what is left; on PostgreSQL the rows
of a batch are locked ``SKIP LOCKED``, so two rotations at once split the work.
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.archive import GZIP_WBITS, PART_BYTES, StoredBlob
from pipeline.crypto import AES_GCM, BlobOpener, KeyRing, TamperedBlob
from pipeline.db.errors import store_errors
from pipeline.db.models import EmailBackup, EmailBackupPart
from pipeline.db.tables import email_backup_parts
from pipeline.errors import ConfigError, MailpipeError

__all__ = [
    "BackupCorrupt",
    "RotationReport",
    "backup_context",
    "find_backup",
    "open_backup",
    "read_backup",
    "rotate",
    "store_parts",
]

_INSERT_PART = insert(email_backup_parts)


class BackupCorrupt(MailpipeError):
    """Raised when a backup decrypts but is not the MIME that was stored (gzip, size or checksum)."""

    reason = "backup-corrupt"


def backup_context(graph_message_id: str) -> str:
    """The associated data a backup blob is sealed with."""
    return f"mailpipe-backup:{graph_message_id}"


def _opener(row: EmailBackup, keyring: KeyRing | None) -> BlobOpener | None:
    if row.encryption == "none":
        return None
    if row.encryption != AES_GCM:
        raise ConfigError(f"backup {row.id} uses unknown encryption {row.encryption!r}")
    if keyring is None:
        raise ConfigError(
            f"backup {row.id} is encrypted with key {row.key_id!r}; set MAILPIPE_ENCRYPTION_KEYS "
            "(or MAILPIPE_ENCRYPTION_KEYS_FILE)"
        )
    return keyring.opener(row.key_id or "", backup_context(row.graph_message_id))


class _Reader:
    """Stored pieces in (``feed``), MIME pieces out (to ``write``); checked by ``finish``.

    For a sealed blob the tag decides: bytes that are not valid gzip are reported only after
    the tag checked out, so an altered blob is always :class:`TamperedBlob`.
    """

    def __init__(self, row: EmailBackup, keyring: KeyRing | None, write: Callable[[bytes], object]) -> None:
        self._row = row
        self._opener = _opener(row, keyring)
        self._decompressor = zlib.decompressobj(GZIP_WBITS)
        self._digest = hashlib.sha256()
        self._size = 0
        self._write = write
        self._corrupt: BackupCorrupt | None = None

    def feed(self, stored: bytes) -> None:
        self._inflate(self._opener.update(stored) if self._opener is not None else stored)

    def finish(self) -> int:
        if self._opener is not None:
            self._inflate(self._opener.finish())
        if self._corrupt is not None:
            raise self._corrupt
        if not self._decompressor.eof or self._decompressor.unused_data:
            raise BackupCorrupt(f"backup {self._row.id} is not one complete gzip stream")
        if self._size != self._row.size or self._digest.hexdigest() != self._row.checksum:
            raise BackupCorrupt(f"backup {self._row.id} does not match its size and sha256 checksum")
        return self._size

    def _inflate(self, compressed: bytes) -> None:
        # At most a part's worth of MIME at a time, however well the data compressed.
        data = compressed
        while data and self._corrupt is None:
            try:
                mime = self._decompressor.decompress(data, PART_BYTES)
            except zlib.error as exc:
                self._corrupt = BackupCorrupt(f"backup {self._row.id} is not valid gzip: {exc}")
                if self._opener is None:
                    raise self._corrupt from exc
                return
            self._digest.update(mime)
            self._size += len(mime)
            self._write(mime)
            data = self._decompressor.unconsumed_tail


def open_backup(row: EmailBackup, keyring: KeyRing | None) -> bytes:
    """The MIME of a backup stored in its row (``parts == 0``); see :func:`read_backup`."""
    if row.parts:
        raise ValueError(f"backup {row.id} is stored in {row.parts} parts: use read_backup")
    pieces: list[bytes] = []
    reader = _Reader(row, keyring, pieces.append)
    reader.feed(row.compressed_blob)
    reader.finish()
    return b"".join(pieces)


async def _stored_pieces(session: AsyncSession, row: EmailBackup) -> AsyncIterator[bytes]:
    """The stored blob of ``row``: its ``compressed_blob``, or its parts one query (and one part) at a time."""
    if not row.parts:
        yield row.compressed_blob
        return
    query = select(EmailBackupPart.data).where(EmailBackupPart.backup_id == row.id)
    for seq in range(row.parts):
        piece = await session.scalar(query.where(EmailBackupPart.seq == seq))
        if piece is None:
            raise BackupCorrupt(f"backup {row.id} is missing part {seq} of {row.parts}")
        yield piece


async def read_backup(
    sessions: async_sessionmaker[AsyncSession],
    row: EmailBackup,
    keyring: KeyRing | None,
    write: Callable[[bytes], object],
) -> int:
    """Hand the MIME of ``row`` to ``write`` piece by piece; return its size.

    Raises :class:`TamperedBlob` or :class:`BackupCorrupt` if what was stored was altered (then
    discard everything ``write`` got), ``ConfigError`` if the key is not configured.
    """
    reader = _Reader(row, keyring, write)
    async with store_errors("read backup"), sessions() as session:
        async for piece in _stored_pieces(session, row):
            reader.feed(piece)
    return reader.finish()


async def store_parts(session: AsyncSession, backup_id: int, blob: StoredBlob) -> None:
    """Insert ``blob``'s parts for the backup ``backup_id``, one part in memory at a time."""
    for seq, piece in enumerate(blob.iter_parts()):
        await session.execute(_INSERT_PART, {"backup_id": backup_id, "seq": seq, "data": piece})


async def find_backup(sessions: async_sessionmaker[AsyncSession], ident: str) -> EmailBackup | None:
    """The backup of an email, named by its ``incoming_email_id`` or its Graph message id."""
    try:
        email_id: uuid.UUID | None = uuid.UUID(ident)
    except ValueError:
        email_id = None
    condition = EmailBackup.graph_message_id == ident
    if email_id is not None:
        condition = or_(condition, EmailBackup.incoming_email_id == email_id)
    async with store_errors("find backup"), sessions() as session:
        return (await session.execute(select(EmailBackup).where(condition).limit(1))).scalar_one_or_none()


@dataclass
class RotationReport:
    """What one :func:`rotate` run did."""

    rotated: int = 0
    #: (backup id, why) of rows that could not be opened; they keep their old key.
    failed: list[tuple[int, str]] = field(default_factory=list)


async def _reseal(session: AsyncSession, row: EmailBackup, keyring: KeyRing) -> None:
    """Seal ``row``'s compressed MIME with the current key, in its row or in new parts."""
    opener = _opener(row, keyring)
    with StoredBlob(keyring, backup_context(row.graph_message_id)) as blob:
        async for piece in _stored_pieces(session, row):
            blob.write(opener.update(piece) if opener is not None else piece)
        if opener is not None:
            blob.write(opener.finish())  # authenticates the old blob before anything is replaced
        blob.seal_end()
        if row.parts:
            await session.execute(delete(EmailBackupPart).where(EmailBackupPart.backup_id == row.id))
        if blob.parts:
            await store_parts(session, row.id, blob)
        row.compressed_blob = blob.inline() if not blob.parts else b""
        row.parts, row.encryption, row.key_id = blob.parts, AES_GCM, keyring.current


async def rotate(
    sessions: async_sessionmaker[AsyncSession], keyring: KeyRing, *, batch_size: int = 200
) -> RotationReport:
    """Re-seal every backup not sealed with ``keyring.current`` (see the module docstring)."""
    report = RotationReport()
    after = 0  # keyset: rows that failed stay behind instead of being selected forever
    while True:
        async with store_errors("key rotation"), sessions.begin() as session:
            rows = (
                (
                    await session.execute(
                        select(EmailBackup)
                        .where(
                            EmailBackup.id > after,
                            or_(
                                EmailBackup.encryption != AES_GCM,
                                EmailBackup.key_id.is_(None),
                                EmailBackup.key_id != keyring.current,
                            ),
                        )
                        .order_by(EmailBackup.id)
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            for row in rows:
                try:
                    # Every refusal is raised before the row or its parts are written.
                    await _reseal(session, row, keyring)
                except (TamperedBlob, BackupCorrupt, ConfigError) as exc:
                    report.failed.append((row.id, str(exc)))
                    continue
                report.rotated += 1
        if len(rows) < batch_size:
            return report
        after = rows[-1].id
