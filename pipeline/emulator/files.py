"""Deterministic pseudo-random files, served as attachment sources for tests.

``GET /_emulator/files/{size}/{seed}[/{name}]`` streams exactly ``size`` bytes produced by
:func:`file_chunks`; :func:`expected_file_sha256` computes the digest of the same bytes without
a server, so a test can check that an attachment survived download, chunked upload and send
bit for bit.  Bytes come from :meth:`random.Random.randbytes` in fixed 64 KiB blocks: fast enough
for 150 MB files and identical on every run and platform for a given seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

__all__ = ["FILE_BLOCK_BYTES", "MAX_FILE_BYTES", "expected_file_sha256", "file_chunks"]

FILE_BLOCK_BYTES = 64 * 1024
#: Refuse absurd sizes: the largest Outlook attachment is 150 MB, allow some headroom.
MAX_FILE_BYTES = 1024 * 1024 * 1024


def file_chunks(size: int, seed: str | int) -> Iterator[bytes]:
    """Yield the file's bytes in blocks of at most :data:`FILE_BLOCK_BYTES`."""
    if size < 0 or size > MAX_FILE_BYTES:
        raise ValueError(f"file size must be between 0 and {MAX_FILE_BYTES} bytes, not {size}")
    generator = random.Random(f"mailpipe-emulator-file:{seed}")
    remaining = size
    while remaining > 0:
        block = min(FILE_BLOCK_BYTES, remaining)
        yield generator.randbytes(block)
        remaining -= block


def expected_file_sha256(size: int, seed: str | int) -> str:
    """Hex sha256 of the file ``GET /_emulator/files/{size}/{seed}`` serves."""
    digest = hashlib.sha256()
    for chunk in file_chunks(size, seed):
        digest.update(chunk)
    return digest.hexdigest()
