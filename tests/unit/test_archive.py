"""Archives are built from the MIME in pieces, kept in memory only while small, and read back exactly."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import tempfile
from pathlib import Path

import pytest

from pipeline.archive import PART_BYTES, ArchiveWriter
from pipeline.backups import BackupCorrupt, _Reader, backup_context, open_backup
from pipeline.crypto import KeyRing, parse_keys
from pipeline.db.models import EmailBackup
from pipeline.errors import SpoolUnavailable, TransientError

KEYS = parse_keys("k1:" + base64.b64encode(os.urandom(32)).decode())


def archived(mime: bytes, keyring: KeyRing | None, piece_bytes: int = 65536) -> EmailBackup:
    """The row the backup step would store for ``mime``, with the blob inline."""
    writer = ArchiveWriter(keyring, backup_context("AAMk-1"))
    for at in range(0, len(mime), piece_bytes):
        writer.write(mime[at : at + piece_bytes])
    archive = writer.finish()
    with archive.blob as blob:
        assert blob.parts == 0
        return EmailBackup(
            id=1,
            graph_message_id="AAMk-1",
            compressed_blob=blob.inline(),
            size=archive.size,
            checksum=archive.checksum,
            encryption=blob.encryption,
            key_id=blob.key_id,
            parts=0,
        )


@pytest.mark.parametrize("keyring", [None, KEYS], ids=["plain", "sealed"])
def test_a_small_message_comes_back_exactly_and_is_plain_gzip_underneath(keyring: KeyRing | None) -> None:
    mime = b"From: a@contoso.example\r\nSubject: hi\r\n\r\n" + b"body line\r\n" * 500
    row = archived(mime, keyring, piece_bytes=100)
    assert (row.size, row.checksum) == (len(mime), hashlib.sha256(mime).hexdigest())
    assert open_backup(row, keyring) == mime
    compressed = (
        row.compressed_blob if keyring is None else keyring.open(row.compressed_blob, "k1", "mailpipe-backup:AAMk-1")
    )
    assert gzip.decompress(compressed) == mime


def test_an_archive_larger_than_a_part_is_spooled_and_split_into_parts() -> None:
    mime = os.urandom(3 * PART_BYTES + 5)  # does not compress: about 3 parts and a bit
    writer = ArchiveWriter(KEYS, "ctx")
    for at in range(0, len(mime), 65536):
        writer.write(mime[at : at + 65536])
    with writer.finish().blob as blob:
        pieces = list(blob.iter_parts())
        assert blob.parts == len(pieces) == 4
        assert all(len(piece) == PART_BYTES for piece in pieces[:-1])
        assert sum(map(len, pieces)) == blob.size
        sealed = b"".join(pieces)
        with pytest.raises(ValueError, match="stored in parts"):
            blob.inline()
    assert gzip.decompress(KEYS.open(sealed, "k1", "ctx")) == mime


def test_an_empty_message_is_a_valid_archive_stored_in_its_row() -> None:
    row = archived(b"", KEYS)
    assert row.size == 0
    assert open_backup(row, KEYS) == b""


def test_a_message_that_compresses_well_is_handed_back_a_part_at_a_time() -> None:
    mime = b"\0" * (40 * PART_BYTES)  # 40 MiB that gzip makes about 40 KiB of
    row = archived(mime, None)
    assert len(row.compressed_blob) < PART_BYTES // 10
    sizes: list[int] = []
    reader = _Reader(row, None, lambda piece: sizes.append(len(piece)))
    reader.feed(row.compressed_blob)
    assert reader.finish() == len(mime)
    assert max(sizes) <= PART_BYTES


@pytest.mark.parametrize("damage", ["checksum", "size", "truncated gzip"])
def test_a_backup_that_is_not_what_was_stored_is_refused(damage: str) -> None:
    row = archived(b"the message\r\n" * 100, None)
    if damage == "checksum":
        row.checksum = "0" * 64
    elif damage == "size":
        row.size += 1
    else:
        row.compressed_blob = row.compressed_blob[:-6]
    with pytest.raises(BackupCorrupt):
        open_backup(row, None)


def test_a_full_disk_while_spooling_is_a_transient_error_naming_the_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/full answers every write with ENOSPC: the spool rolls over onto it past one part.
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *args, **kwargs: Path("/dev/full").open("w+b"))  # noqa: SIM115 (the spool owns it)
    writer = ArchiveWriter(None, "ctx")
    with pytest.raises(SpoolUnavailable, match=tempfile.gettempdir()) as raised:
        for _ in range(4):
            writer.write(os.urandom(PART_BYTES))
    assert isinstance(raised.value, TransientError)
    assert isinstance(raised.value.__cause__, OSError)
    writer.abort()
