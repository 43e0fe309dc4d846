"""Writing a sent email's backup as it arrives: gzip, then AES-256-GCM, spooled, stored in parts.

The stored form is the one :mod:`pipeline.backups` reads: ``gzip(MIME)``, sealed as
:mod:`pipeline.crypto` describes when a key ring is configured. :class:`ArchiveWriter` builds it
from the MIME in pieces, with the MIME's size and sha256, so a message of any size costs the
backup worker about one piece of memory, not several copies of the message:

* up to :data:`PART_BYTES` stored bytes the archive stays in memory and is stored in the
  ``email_backups`` row itself (``parts = 0``), as every backup always was;
* beyond that it is spooled to an anonymous temporary file (``TMPDIR``, ``/tmp`` in the Helm
  chart; gone with the process if it dies; a full disk raises :class:`~pipeline.errors.SpoolUnavailable`, retried
  like any transient error) and stored as ``email_backup_parts`` rows of
  :data:`PART_BYTES` each, whose concatenation is the blob; the ``email_backups`` row then holds
  an empty blob and ``parts = N``.

The database transaction starts only once the whole message has been fetched and spooled, so a
slow download holds no lock (SQLite's writer lock above all).
"""

from __future__ import annotations

import hashlib
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from pipeline.crypto import AES_GCM, BlobSealer, KeyRing
from pipeline.errors import SpoolUnavailable

__all__ = ["PART_BYTES", "Archive", "ArchiveWriter", "StoredBlob"]

#: Size of one stored part, and the largest archive kept in memory and stored inline.
PART_BYTES = 1024 * 1024
GZIP_LEVEL = 6
#: zlib's window bits for a gzip wrapper (header and CRC-32 trailer), as ``gzip.compress`` writes.
GZIP_WBITS = 16 + zlib.MAX_WBITS


class StoredBlob:
    """The bytes a backup row stores, spooled as they are produced (see the module docstring).

    ``write`` takes compressed bytes and seals them when a key ring is given; once
    :meth:`seal_end` has run, the blob is complete and can be read back, inline or in parts.
    Close it (or use it as a context manager) to free the spool.
    """

    def __init__(self, keyring: KeyRing | None, context: str) -> None:
        self._sealer: BlobSealer | None = keyring.sealer(context) if keyring is not None else None
        self.encryption = AES_GCM if keyring is not None else "none"
        self.key_id = keyring.current if keyring is not None else None
        #: Bytes of the blob so far.
        self.size = 0
        # In memory up to one part; past that, a file with no name that the kernel frees on exit.
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=PART_BYTES)  # noqa: SIM115

    def write(self, compressed: bytes) -> None:
        """Add compressed bytes."""
        if compressed:
            self._put(self._sealer.update(compressed) if self._sealer is not None else compressed)

    def seal_end(self) -> None:
        """Write the seal's tag; nothing may be written afterwards."""
        if self._sealer is not None:
            self._put(self._sealer.finish())
            self._sealer = None

    @property
    def parts(self) -> int:
        """How many ``email_backup_parts`` rows the blob needs (0: stored in the row itself)."""
        return 0 if self.size <= PART_BYTES else -(-self.size // PART_BYTES)

    def inline(self) -> bytes:
        """The whole blob; only for one stored in its row (``parts == 0``)."""
        if self.parts:
            raise ValueError(f"a blob of {self.size} bytes is stored in parts")
        self._spool.seek(0)
        return self._spool.read()

    def iter_parts(self) -> Iterator[bytes]:
        """The blob in :data:`PART_BYTES` pieces, read from the spool one at a time."""
        self._spool.seek(0)
        while piece := self._spool.read(PART_BYTES):
            yield piece

    def close(self) -> None:
        """Free the spool (its temporary file, if it has one)."""
        self._spool.close()

    def __enter__(self) -> StoredBlob:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _put(self, stored: bytes) -> None:
        try:
            self._spool.write(stored)
        except OSError as exc:  # the spool rolled over to a file and the disk is full
            where = tempfile.gettempdir()
            raise SpoolUnavailable(f"cannot spool a backup of {self.size}+ bytes to {where}: {exc}") from exc
        self.size += len(stored)


@dataclass(frozen=True)
class Archive:
    """A finished archive: the MIME's size and sha256 hex, and the blob to store."""

    size: int
    checksum: str
    blob: StoredBlob


class ArchiveWriter:
    """Feed the MIME with :meth:`write`, then :meth:`finish`; ``context`` is the sealing context."""

    def __init__(self, keyring: KeyRing | None, context: str) -> None:
        self._compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
        self._blob = StoredBlob(keyring, context)
        self._digest = hashlib.sha256()
        self._size = 0

    def write(self, mime_piece: bytes) -> None:
        """Add the next piece of the MIME."""
        self._digest.update(mime_piece)
        self._size += len(mime_piece)
        self._blob.write(self._compressor.compress(mime_piece))

    def finish(self) -> Archive:
        """Close the compressed stream and the seal; the writer is spent afterwards."""
        self._blob.write(self._compressor.flush())
        self._blob.seal_end()
        return Archive(self._size, self._digest.hexdigest(), self._blob)

    def abort(self) -> None:
        """Drop what was written (the message could not be fetched whole)."""
        self._blob.close()
