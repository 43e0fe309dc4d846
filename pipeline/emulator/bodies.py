"""Bounded request-body reading.

Bodies are read as a stream and the limit is enforced while reading, so a 150 MB mistake never
sits in memory.  An oversized body is still *drained* before the 413 goes out: a client such as
httpx writes the whole request before reading the answer, and closing the socket under it would
turn a clean 413 into a connection reset.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from .errors import GraphError, bad_request

__all__ = ["drain", "read_body", "read_json", "too_large"]


def too_large(limit: int) -> GraphError:
    """Graph's answer to a request over its size limit."""
    return GraphError(
        413,
        "RequestEntityTooLarge",
        f"The maximum request length supported is {limit / (1024 * 1024):g}MB.",
    )


async def drain(request: Request) -> None:
    """Read and discard whatever is left of the body (nothing, if it was read to the end)."""
    try:
        async for _ in request.stream():
            pass
    except RuntimeError:
        return  # Starlette's "Stream consumed": the body was already read completely


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 once it exceeds ``limit`` bytes (after draining the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await drain(request)
        raise too_large(limit)
    body = bytearray()
    oversized = False
    async for chunk in request.stream():
        oversized = oversized or len(body) + len(chunk) > limit
        if not oversized:
            body.extend(chunk)
    if oversized:
        raise too_large(limit)
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON; 400 ``BadRequest`` if it is empty or malformed."""
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request("Unable to read JSON request payload. Please ensure Content-Type header is set "
                          "and payload is of valid JSON format.") from exc  # fmt: skip
