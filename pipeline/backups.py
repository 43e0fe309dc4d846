"""Reading stored backups back, and re-sealing them under the current key.

A backup row holds ``gzip(MIME)``, sealed with AES-256-GCM when encryption is configured
(:mod:`pipeline.crypto`; the associated data is ``mailpipe-backup:{graph_message_id}``, which
binds the blob to its row). :func:`open_backup` undoes both and checks the MIME against the
row's sha256, so a backup either comes back exactly as stored or fails loudly.

:func:`rotate` re-encrypts, in batches of one transaction each, every backup not sealed with
the key ring's current key (older keys and unencrypted rows alike). It selects by state, so
after a crash or a stop running it again continues with what is left; on PostgreSQL the rows
of a batch are locked ``SKIP LOCKED``, so two rotations at once split the work.
"""

from __future__ import annotations

import gzip
import hashlib
import uuid
from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.crypto import AES_GCM, KeyRing, TamperedBlob
from pipeline.db.errors import store_errors
from pipeline.db.models import EmailBackup
from pipeline.errors import ConfigError, MailpipeError

__all__ = ["BackupCorrupt", "RotationReport", "backup_context", "find_backup", "open_backup", "rotate"]


class BackupCorrupt(MailpipeError):
    """Raised when a backup decrypts but is not the MIME that was stored (gzip or checksum)."""

    reason = "backup-corrupt"


def backup_context(graph_message_id: str) -> str:
    """The associated data a backup blob is sealed with."""
    return f"mailpipe-backup:{graph_message_id}"


def _compressed(row: EmailBackup, keyring: KeyRing | None) -> bytes:
    if row.encryption == "none":
        return row.compressed_blob
    if row.encryption != AES_GCM:
        raise ConfigError(f"backup {row.id} uses unknown encryption {row.encryption!r}")
    if keyring is None:
        raise ConfigError(
            f"backup {row.id} is encrypted with key {row.key_id!r}; set MAILPIPE_ENCRYPTION_KEYS "
            "(or MAILPIPE_ENCRYPTION_KEYS_FILE)"
        )
    return keyring.open(row.compressed_blob, row.key_id or "", backup_context(row.graph_message_id))


def open_backup(row: EmailBackup, keyring: KeyRing | None) -> bytes:
    """The MIME stored in ``row``; :class:`TamperedBlob` or :class:`BackupCorrupt` if altered."""
    compressed = _compressed(row, keyring)
    try:
        mime = gzip.decompress(compressed)
    except (OSError, EOFError) as exc:
        raise BackupCorrupt(f"backup {row.id} is not valid gzip: {exc}") from exc
    if hashlib.sha256(mime).hexdigest() != row.checksum:
        raise BackupCorrupt(f"backup {row.id} does not match its sha256 checksum")
    return mime


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
                    compressed = _compressed(row, keyring)
                except (TamperedBlob, ConfigError) as exc:
                    report.failed.append((row.id, str(exc)))
                    continue
                row.compressed_blob, row.key_id = keyring.seal(compressed, backup_context(row.graph_message_id))
                row.encryption = AES_GCM
                report.rotated += 1
        if len(rows) < batch_size:
            return report
        after = rows[-1].id
