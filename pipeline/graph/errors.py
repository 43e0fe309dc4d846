"""Translate what Graph, kiota and httpx raise into :mod:`pipeline.errors`, at one boundary.

Rules (status code first, Graph's error code only for the message)::

    429, 500, 502, 503, 504, 408, 409, 401, other 5xx   -> GraphUnavailable
    400, 403, 404, 413, other 4xx                        -> GraphRejected
    httpx connect errors, pool timeouts                  -> GraphUnavailable
    httpx read/write timeouts, resets, protocol errors   -> GraphUnavailable

For a *send* call (``sendMail``, ``/send``) every failure that may hide a send that happened
becomes :class:`~pipeline.errors.SendOutcomeUnknown` instead: any 5xx, any unexpected 2xx
(Graph answers 202 and nothing else for an accepted send), and any network failure after the
request may have left this process. Only failures that prove the request never reached Graph
(connection refused, connect or pool timeout) stay plain :class:`GraphUnavailable`; a 4xx is a
refusal, so it stays what the table says.

Messages name the operation, the mailbox, the HTTP status and Graph's error code. They never
include a token, a request URL (upload URLs carry one in the query) or a request header.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import httpx
from kiota_abstractions.api_error import APIError

from pipeline.errors import GraphRejected, GraphUnavailable, MailpipeError, SendOutcomeUnknown

__all__ = [
    "MessageTooLarge",
    "UploadRangeMismatch",
    "UploadSessionGone",
    "error_from_response",
    "graph_errors",
    "parse_retry_after",
    "translate_error",
]

#: Statuses that mean "try again later"; everything else in 4xx is a refusal.
_TRANSIENT_4XX = frozenset({401, 408, 409, 429})


class MessageTooLarge(GraphRejected):
    """Raised before calling Graph when a request body would exceed Graph's 4 MB request limit."""

    reason = "message-too-large"


class UploadRangeMismatch(GraphUnavailable):
    """Raised when an upload session answers 416: the chunk did not start where it expected.

    ``expected_offset`` is the offset the session asked for in the same answer, or ``None`` if
    it did not say; then call :meth:`~pipeline.graph.mailer.GraphMailer.upload_status`.
    """

    reason = "upload-range-mismatch"

    def __init__(self, message: str, *, expected_offset: int | None, mailbox: str | None = None) -> None:
        super().__init__(message, status_code=416, code="RangeNotSatisfiable", mailbox=mailbox)
        self.reason = type(self).reason
        self.expected_offset = expected_offset


class UploadSessionGone(GraphUnavailable):
    """Raised when an upload URL answers 404/410: the session expired or was cancelled.

    The bytes uploaded so far are lost; the caller needs a new upload session.
    """

    reason = "upload-session-gone"

    def __init__(self, message: str, *, status_code: int, mailbox: str | None = None) -> None:
        super().__init__(message, status_code=status_code, code="UploadSessionNotFound", mailbox=mailbox)
        self.reason = type(self).reason


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for, or ``None`` if absent or unreadable.

    Accepts delta-seconds, fractional too (Graph has sent ``2.128``), and an HTTP-date, which is
    turned into seconds from ``now`` (default: the current UTC time). Past dates and negative
    numbers give ``0.0``.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup on kiota's dict or an ``httpx.Headers``."""
    if headers is None:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return str(value)
    return None


def _classify(
    status: int,
    *,
    code: str | None,
    detail: str | None,
    retry_after_s: float | None,
    mailbox: str | None,
    operation: str,
    is_send: bool,
) -> MailpipeError:
    """Build the pipeline error for one HTTP answer that was not the expected success."""
    where = f"Graph {operation} for {mailbox}" if mailbox else f"Graph {operation}"
    text = f"{where} failed: HTTP {status} {code or 'no error code'}"
    if detail:
        text += f": {detail}"
    unknown = is_send and (status >= 500 or 200 <= status < 300)
    if unknown:
        return SendOutcomeUnknown(
            text + " (the send may have happened; look for it before sending again)",
            status_code=status,
            code=code,
            retry_after_s=retry_after_s,
            mailbox=mailbox,
        )
    if status >= 500 or status in _TRANSIENT_4XX or status < 400:
        return GraphUnavailable(text, status_code=status, code=code, retry_after_s=retry_after_s, mailbox=mailbox)
    return GraphRejected(text, status_code=status, code=code)


def _from_api_error(exc: APIError, *, mailbox: str | None, operation: str, is_send: bool) -> MailpipeError:
    code: str | None = None
    detail: str | None = None
    main = getattr(exc, "error", None)  # msgraph's ODataError carries Graph's {"error": {...}}
    if main is not None:
        code = getattr(main, "code", None)
        detail = getattr(main, "message", None)
    status = exc.response_status_code
    if status is None:  # kiota raised before any answer: treat like a network failure
        return _network(
            f"no HTTP status ({type(exc).__name__})",
            mailbox=mailbox,
            operation=operation,
            may_have_sent=is_send,
        )
    return _classify(
        status,
        code=code,
        detail=detail,
        retry_after_s=parse_retry_after(_header(exc.response_headers, "Retry-After")),
        mailbox=mailbox,
        operation=operation,
        is_send=is_send,
    )


def _network(what: str, *, mailbox: str | None, operation: str, may_have_sent: bool) -> GraphUnavailable:
    where = f"Graph {operation} for {mailbox}" if mailbox else f"Graph {operation}"
    if may_have_sent:
        return SendOutcomeUnknown(
            f"{where} failed: {what} (the send may have happened; look for it before sending again)",
            code=what,
            mailbox=mailbox,
        )
    return GraphUnavailable(f"{where} failed: {what}", code=what, mailbox=mailbox)


def _from_httpx_error(exc: httpx.HTTPError, *, mailbox: str | None, operation: str, is_send: bool) -> GraphUnavailable:
    # A connect failure or a wait for a pooled connection proves the request never left;
    # anything later (write, read, reset, protocol error) may have delivered it.
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    kind = type(exc).__name__
    return _network(kind, mailbox=mailbox, operation=operation, may_have_sent=is_send and not never_sent)


def translate_error(
    exc: APIError | httpx.HTTPError,
    *,
    mailbox: str | None,
    operation: str,
    is_send: bool = False,
) -> MailpipeError:
    """Return the pipeline error for ``exc`` raised by a Graph call (the caller raises it ``from exc``).

    ``operation`` names the call in the message (``"sendMail"``, ``"create draft"``);
    ``is_send`` marks calls whose ambiguous failures must become ``SendOutcomeUnknown``.
    """
    if isinstance(exc, APIError):
        return _from_api_error(exc, mailbox=mailbox, operation=operation, is_send=is_send)
    return _from_httpx_error(exc, mailbox=mailbox, operation=operation, is_send=is_send)


def error_from_response(
    response: httpx.Response,
    *,
    mailbox: str | None,
    operation: str,
    is_send: bool = False,
) -> MailpipeError:
    """Return the pipeline error for a raw HTTP answer that was not the expected success.

    Reads Graph's ``{"error": {"code", "message"}}`` body when there is one; other bodies
    (gateway HTML, empty) leave the code ``None``. The response must already be read.
    """
    code: str | None = None
    detail: str | None = None
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raw_code, raw_detail = body["error"].get("code"), body["error"].get("message")
        code = raw_code if isinstance(raw_code, str) else None
        detail = raw_detail if isinstance(raw_detail, str) else None
    return _classify(
        response.status_code,
        code=code,
        detail=detail,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        mailbox=mailbox,
        operation=operation,
        is_send=is_send,
    )


@contextlib.contextmanager
def graph_errors(mailbox: str | None, operation: str, *, is_send: bool = False) -> Iterator[None]:
    """Run a block that talks to Graph, re-raising kiota/httpx errors as pipeline errors ``from`` them.

    Pipeline errors raised inside pass through unchanged; anything else is not caught.
    """
    try:
        yield
    except (APIError, httpx.HTTPError) as exc:
        raise translate_error(exc, mailbox=mailbox, operation=operation, is_send=is_send) from exc
