"""Graph-shaped errors.

Route code raises :class:`GraphError`; the Graph gate (and the upload routes) turn it into the
body Graph sends for every 4xx/5xx::

    {"error": {"code": ..., "message": ..., "innerError": {"date": ..., "request-id": ...,
                                                           "client-request-id": ...}}}

The ``request-id``/``client-request-id`` pair comes from :mod:`.envelope`, which also copies it
onto the response headers.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .clock import iso_now

__all__ = [
    "GraphError",
    "bad_request",
    "error_response",
    "format_seconds",
    "not_found",
    "request_ids",
]


class GraphError(Exception):
    """Raised by route code to answer with a Graph error body instead of a result.

    ``headers`` are added to the response (``Retry-After`` for 429/503); ``extra`` is merged into
    the top level of the body for the few errors that carry more than ``error`` (the 416 of an
    upload session names the expected range).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    """A 400 with Graph's generic code unless a more specific one is given."""
    return GraphError(400, code, message)


def not_found(what: str = "The specified object was not found in the store.") -> GraphError:
    """The 404 Outlook answers for unknown or already moved items."""
    return GraphError(404, "ErrorItemNotFound", what)


def request_ids(request: Request) -> tuple[str, str]:
    """The ``(request-id, client-request-id)`` that :mod:`.envelope` assigned to this request."""
    state = request.scope.get("state") or {}
    return str(state.get("request_id", "")), str(state.get("client_request_id", ""))


def error_response(request: Request, error: GraphError) -> JSONResponse:
    """Render ``error`` exactly as Graph does, with ``innerError`` naming this request."""
    request_id, client_request_id = request_ids(request)
    body: dict[str, Any] = {
        "error": {
            "code": error.code,
            "message": error.message,
            "innerError": {
                "date": iso_now(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        },
        **error.extra,
    }
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def format_seconds(seconds: float) -> str:
    """Format a ``Retry-After`` value the way Graph does: ``"1"``, ``"0.5"``, ``"2.128"``.

    Integral values lose their ``.0`` (most clients parse only integers); fractions keep up to
    millisecond precision, rounded up so that waiting exactly that long is always enough.
    """
    millis = -(-round(seconds * 1_000_000) // 1000)  # ceil to whole milliseconds, exact in ints
    if millis % 1000 == 0:
        return str(millis // 1000)
    return f"{millis / 1000:.3f}".rstrip("0")
