"""Attachment sources: stream an ``urlOrId`` in fixed-size chunks, checked against its size.

A 150 MB file is never held whole: the caller receives chunks of ``chunk_bytes`` (the last
one shorter) and uploads each before the next is read. The Graph token is never sent here:
this client is a plain ``httpx.AsyncClient`` with no auth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from pipeline.errors import AttachmentError, AttachmentUnavailable

__all__ = ["fetch_small", "stream_chunks"]

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 405, 410, 414, 451})


def _check_status(response: httpx.Response, url: str) -> None:
    if response.status_code in PERMANENT_STATUSES:
        raise AttachmentError(f"attachment {url} answered {response.status_code}", reason="attachment-not-found")
    if response.status_code >= 400:
        raise AttachmentUnavailable(f"attachment {url} answered {response.status_code}")


async def stream_chunks(
    client: httpx.AsyncClient, url: str, *, size: int, chunk_bytes: int, start: int = 0
) -> AsyncIterator[bytes]:
    """Yield the bytes of ``url`` from offset ``start`` in chunks of ``chunk_bytes``.

    Raises :class:`AttachmentError` when the source is gone or its length differs from the
    declared ``size``, :class:`AttachmentUnavailable` for failures that may pass. Asks for a
    ``Range`` when resuming and skips the prefix itself if the server ignores it.
    """
    headers = {"Range": f"bytes={start}-"} if start else {}
    buffer = bytearray()
    position = 0
    try:
        async with client.stream("GET", url, headers=headers) as response:
            _check_status(response, url)
            if start and response.status_code == 206:
                position = start
            declared = response.headers.get("content-length")
            expected = size - position
            if declared is not None and declared.isdigit() and int(declared) != expected:
                raise AttachmentError(
                    f"attachment {url} is {int(declared) + position} bytes but its size says {size}",
                    reason="attachment-size-mismatch",
                )
            async for piece in response.aiter_bytes():
                if position < start:
                    skip = min(len(piece), start - position)
                    piece = piece[skip:]  # noqa: PLW2901 - the prefix before the resume point
                    position += skip
                buffer += piece
                position += len(piece)
                if position > size:
                    raise AttachmentError(
                        f"attachment {url} is longer than its declared size {size}",
                        reason="attachment-size-mismatch",
                    )
                while len(buffer) >= chunk_bytes:
                    yield bytes(buffer[:chunk_bytes])
                    del buffer[:chunk_bytes]
    except httpx.HTTPError as exc:
        raise AttachmentUnavailable(f"downloading {url} failed: {exc!r}") from exc
    if position != size:
        raise AttachmentError(
            f"attachment {url} ended at {position} bytes but its size says {size}",
            reason="attachment-size-mismatch",
        )
    if buffer:
        yield bytes(buffer)


async def fetch_small(client: httpx.AsyncClient, url: str, *, size: int) -> bytes:
    """The whole content of a small attachment (below the inline limit)."""
    chunks = [chunk async for chunk in stream_chunks(client, url, size=size, chunk_bytes=size)]
    return b"".join(chunks)
