"""ASGI middleware that gives every request Graph's envelope: URL tolerance and request ids.

Path clean-up happens before routing because real clients send URLs that Graph accepts but a
plain router would not:

* ``//`` runs are collapsed (the SDK's default base URL yields ``/v1.0//users/...``);
* OData key syntax ``/users('u')/messages('id')`` is rewritten to ``/users/u/messages/id`` so
  the ``Location`` header of a finished upload can be fetched back;
* percent-escapes are already decoded by the ASGI server (``u%40x.com`` arrives as
  ``u@x.com``), which is what makes both spellings of a UPN hit the same route.

Every response then carries ``request-id`` (fresh per request) and ``client-request-id`` (the
caller's, echoed, else fresh), as Graph does; :func:`.errors.request_ids` reads the same pair.
"""

from __future__ import annotations

import re
import uuid
from urllib.parse import quote

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GraphEnvelopeMiddleware", "normalise_path"]

_SLASHES = re.compile(r"/{2,}")
_ODATA_KEY = re.compile(r"/([A-Za-z][A-Za-z0-9]*)\('((?:[^']|'')*)'\)")


#: Graph matches URL segments case-insensitively (``/SendMail`` works); routes use these spellings.
_SEGMENTS = {
    s.lower(): s
    for s in (
        "users",
        "sendMail",
        "messages",
        "send",
        "attachments",
        "createUploadSession",
        "mailFolders",
        "$value",
    )
}


def _unquote_key(match: re.Match[str]) -> str:
    return f"/{match.group(1)}/{match.group(2).replace(chr(39) * 2, chr(39))}"


def normalise_path(path: str) -> str:
    """Collapse ``//``, rewrite OData ``segment('key')`` into ``segment/key`` and, under
    ``/v1.0``, spell Graph's fixed segments canonically.
    """
    path = _ODATA_KEY.sub(_unquote_key, _SLASHES.sub("/", path))
    if not path.lower().startswith("/v1.0/"):
        return path
    segments = path.split("/")
    return "/".join([segments[0], "v1.0", *(_SEGMENTS.get(s.lower(), s) for s in segments[2:])])


class GraphEnvelopeMiddleware:
    """Normalises the path and stamps request ids on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = normalise_path(scope["path"])
        request_id = str(uuid.uuid4())
        client_request_id = Headers(scope=scope).get("client-request-id") or str(uuid.uuid4())
        state = dict(scope.get("state") or {})
        state.update(request_id=request_id, client_request_id=client_request_id)
        scope = {
            **scope,
            "path": path,
            "raw_path": quote(path, safe="/@:!$&'()*+,;=~").encode(),
            "state": state,
        }

        async def stamped_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["request-id"] = request_id
                headers["client-request-id"] = client_request_id
            await send(message)

        await self.app(scope, receive, stamped_send)
