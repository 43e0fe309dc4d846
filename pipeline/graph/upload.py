"""Reading the answers of an Outlook attachment upload session.

An upload session (``createUploadSession``) gives an opaque, pre-authenticated ``uploadUrl``.
Bytes go there in order with ``PUT`` and a ``Content-Range`` header, never with an
``Authorization`` header. Each answer is one of:

* ``200`` + ``{"nextExpectedRanges": ["N"]}``: send from offset ``N`` next. Outlook writes
  ``"N"``, OneDrive-style sessions ``"N-"`` or ``"N-M"``, and the key's casing varies
  (``NextExpectedRanges``), so all of these are accepted;
* ``201`` with an empty body and a ``Location`` header naming the new attachment: done;
* ``416``: the chunk did not start where the session expected;
* ``404``/``410``: the session expired or was cancelled.

This module turns those answers into :class:`UploadProgress` or an exception. It does no I/O;
:class:`~pipeline.graph.mailer.GraphMailer` makes the requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from pipeline.errors import GraphUnavailable, MailpipeError
from pipeline.graph.errors import UploadRangeMismatch, UploadSessionGone, error_from_response

__all__ = [
    "UploadProgress",
    "UploadSessionRef",
    "content_range",
    "parse_next_offset",
    "progress_from_response",
    "status_from_response",
]


@dataclass(frozen=True, slots=True)
class UploadSessionRef:
    """A created upload session: where to PUT and the offset to start from (normally 0)."""

    upload_url: str
    next_offset: int


@dataclass(frozen=True, slots=True)
class UploadProgress:
    """The answer to one chunk.

    While the upload goes on, ``next_offset`` is the offset of the next chunk and ``location``
    is ``None``. After the last chunk ``next_offset`` is ``None`` and ``location`` is the URL
    of the new attachment from the ``Location`` header (``None`` if the server sent none).
    """

    next_offset: int | None
    location: str | None

    @property
    def done(self) -> bool:
        """True once the session accepted the last byte."""
        return self.next_offset is None


def content_range(offset: int, length: int, total: int) -> str:
    """Return the ``Content-Range`` value for ``length`` bytes at ``offset`` of a ``total``-byte file."""
    if offset < 0 or length <= 0 or offset + length > total:
        raise ValueError(f"chunk {offset}+{length} does not fit in a file of {total} bytes")
    return f"bytes {offset}-{offset + length - 1}/{total}"


def parse_next_offset(body: object) -> int | None:
    """Return the lowest start offset in ``body["nextExpectedRanges"]`` (any key casing).

    ``None`` when the key is missing, the list is empty or no entry reads as ``N``, ``N-`` or
    ``N-M``.
    """
    if not isinstance(body, dict):
        return None
    ranges = next((v for k, v in body.items() if str(k).lower() == "nextexpectedranges"), None)
    if not isinstance(ranges, list):
        return None
    starts = []
    for entry in ranges:
        start = str(entry).split("-", 1)[0].strip()
        if start.isdigit():
            starts.append(int(start))
    return min(starts) if starts else None


def _json_body(response: httpx.Response) -> object:
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def progress_from_response(response: httpx.Response, *, end: int, total: int, mailbox: str | None) -> UploadProgress:
    """Turn the answer to a chunk that ended at byte ``end`` (exclusive) into progress, or raise.

    Raises :class:`UploadRangeMismatch` (416), :class:`UploadSessionGone` (404/410),
    :class:`~pipeline.errors.GraphUnavailable` for an answer without the next offset, and
    otherwise the usual translation of the status code.
    """
    status = response.status_code
    if status == 201:
        return UploadProgress(next_offset=None, location=response.headers.get("Location"))
    if status in (200, 202):
        next_offset = parse_next_offset(_json_body(response))
        if next_offset is not None:
            return UploadProgress(next_offset=next_offset, location=None)
        if end == total:
            return UploadProgress(next_offset=None, location=response.headers.get("Location"))
        raise GraphUnavailable(
            f"upload session for {mailbox or 'unknown mailbox'} answered {status} without "
            "nextExpectedRanges before the last chunk",
            status_code=status,
            code="MissingNextExpectedRanges",
            mailbox=mailbox,
        )
    raise _upload_error(response, mailbox=mailbox, operation="upload chunk")


def status_from_response(response: httpx.Response, *, mailbox: str | None) -> int | None:
    """Turn the answer to ``GET {uploadUrl}`` into the next expected offset.

    ``None`` if the session is gone (404/410) or expects nothing more; raises for other errors.
    """
    if response.status_code in (404, 410):
        return None
    if response.is_success:
        return parse_next_offset(_json_body(response))
    raise _upload_error(response, mailbox=mailbox, operation="upload status")


def _upload_error(response: httpx.Response, *, mailbox: str | None, operation: str) -> MailpipeError:
    where = f"Graph {operation} for {mailbox}" if mailbox else f"Graph {operation}"
    if response.status_code == 416:
        expected = parse_next_offset(_json_body(response))
        return UploadRangeMismatch(
            f"{where} failed: HTTP 416, the session expects offset {expected}",
            expected_offset=expected,
            mailbox=mailbox,
        )
    if response.status_code in (404, 410):
        return UploadSessionGone(
            f"{where} failed: HTTP {response.status_code}, the upload session expired or was cancelled",
            status_code=response.status_code,
            mailbox=mailbox,
        )
    return error_from_response(response, mailbox=mailbox, operation=operation)
