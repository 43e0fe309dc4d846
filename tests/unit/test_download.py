"""Attachment downloads are streamed in fixed chunks and checked against the declared size."""

from __future__ import annotations

import httpx
import pytest

from pipeline.download import stream_chunks
from pipeline.errors import AttachmentError, AttachmentUnavailable

DATA = bytes(range(256)) * 40  # 10,240 bytes


def client(status: int = 200, body: bytes = DATA, honour_range: bool = True) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        start = 0
        if honour_range and "range" in request.headers:
            start = int(request.headers["range"].split("=")[1].rstrip("-"))
            return httpx.Response(206, content=body[start:])
        return httpx.Response(status, content=body if status == 200 else b"")

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def collect(http: httpx.AsyncClient, **kwargs: int) -> list[bytes]:
    async with http:
        return [c async for c in stream_chunks(http, "http://files/x", **kwargs)]


async def test_chunks_have_the_requested_size_and_rebuild_the_file() -> None:
    chunks = await collect(client(), size=len(DATA), chunk_bytes=3000)
    assert [len(c) for c in chunks] == [3000, 3000, 3000, 1240]
    assert b"".join(chunks) == DATA


@pytest.mark.parametrize("honour_range", [True, False])
async def test_resuming_yields_only_the_bytes_after_the_offset(honour_range: bool) -> None:
    chunks = await collect(client(honour_range=honour_range), size=len(DATA), chunk_bytes=4096, start=5000)
    assert b"".join(chunks) == DATA[5000:]


async def test_a_size_mismatch_is_permanent() -> None:
    with pytest.raises(AttachmentError, match="size says"):
        await collect(client(), size=len(DATA) + 1, chunk_bytes=4096)


async def test_not_found_is_permanent_and_server_errors_are_transient() -> None:
    with pytest.raises(AttachmentError):
        await collect(client(status=404), size=10, chunk_bytes=4096)
    with pytest.raises(AttachmentUnavailable):
        await collect(client(status=503), size=10, chunk_bytes=4096)
