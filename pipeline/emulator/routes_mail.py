"""Message routes under ``/v1.0/users/{user}``: sendMail, drafts, send, read, list, ``$value``.

Handlers run behind :mod:`.gate` (auth, throttling, faults are already dealt with) and raise
:class:`GraphError` for anything Graph would refuse.  Both JSON and base64 MIME
(``Content-Type: text/plain``) bodies are accepted where Graph accepts them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import read_body, read_json
from .emulator import Emulator
from .errors import bad_request
from .mime import render_mime
from .mime_in import parse_mime_body
from .models import Folder, StoredMessage
from .query import QueryOptions
from .render import message_json, message_record
from .validation import ParsedMessage, check_recipients_for_send, parse_message

__all__ = [
    "create_message",
    "delete_message",
    "get_message",
    "get_mime",
    "list_folder_messages",
    "list_messages",
    "patch_message",
    "root_url",
    "send_draft",
    "send_mail",
    "user_of",
]


def user_of(request: Request) -> str:
    """The mailbox UPN from the path, as the caller spelled it."""
    return str(request.path_params["user"])


def root_url(request: Request) -> str:
    """``http://host:port`` as the client addressed this server."""
    return str(request.base_url).rstrip("/")


def _context(request: Request, tail: str) -> str:
    return f"{root_url(request)}/v1.0/$metadata#users('{user_of(request)}')/{tail}"


def _render(request: Request, emulator: Emulator, message: StoredMessage, options: QueryOptions) -> dict[str, Any]:
    folder_id = emulator.store.mailbox(user_of(request)).folder_ids[message.folder]
    return message_json(message, folder_id, options)


def _is_mime(request: Request) -> bool:
    # Graph reads a text/plain body as base64 MIME (graph-facts §1.1, §1.2).
    return request.headers.get("content-type", "").lower().startswith("text/plain")


async def _read_message(request: Request, emulator: Emulator) -> ParsedMessage:
    """Read a message body, JSON or base64 MIME."""
    limit = emulator.config.max_request_bytes
    if _is_mime(request):
        return parse_mime_body(await read_body(request, limit))
    return parse_message(await read_json(request, limit))


async def send_mail(request: Request, emulator: Emulator) -> Response:
    """``POST /sendMail``: validate, send at once, answer 202 with no body (no id, by design)."""
    save = True
    if _is_mime(request):
        parsed = await _read_message(request, emulator)
    else:
        payload = await read_json(request, emulator.config.max_request_bytes)
        fields = {k.lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
        if "message" not in fields:
            raise bad_request("Required parameter 'Message' is missing.", code="ErrorInvalidParameter")
        parsed = parse_message(fields["message"])
        save_flag = fields.get("savetosentitems", True)
        if not isinstance(save_flag, bool):
            raise bad_request("saveToSentItems must be a boolean.")
        save = save_flag
    check_recipients_for_send(parsed.props)
    upn = user_of(request)
    message = emulator.store.new_message(upn, parsed, keep_bytes=emulator.config.keep_attachment_bytes)
    emulator.send(upn, message, stored=False, save=save)
    return Response(status_code=202)


async def create_message(request: Request, emulator: Emulator) -> Response:
    """``POST /messages``: a new draft in Drafts, 201 with the full message."""
    parsed = await _read_message(request, emulator)
    message = emulator.store.create_draft(user_of(request), parsed, keep_bytes=emulator.config.keep_attachment_bytes)
    body = {
        "@odata.context": _context(request, "messages/$entity"),
        **_render(request, emulator, message, QueryOptions()),
    }
    return JSONResponse(body, status_code=201)


async def get_message(request: Request, emulator: Emulator) -> Response:
    """``GET /messages/{id}`` honouring ``$select`` and ``$expand``."""
    options = QueryOptions.from_request(request)
    message = emulator.store.get(user_of(request), request.path_params["message_id"])
    return JSONResponse(
        {
            "@odata.context": _context(request, "messages/$entity"),
            **_render(request, emulator, message, options),
        }
    )


async def patch_message(request: Request, emulator: Emulator) -> Response:
    """``PATCH /messages/{id}``: drafts only; answers 200 with the updated message."""
    parsed = await _read_message(request, emulator)
    if parsed.attachments:
        raise bad_request("Attachments cannot be changed with PATCH; use the attachments collection.")
    message = emulator.store.update_draft(user_of(request), request.path_params["message_id"], parsed)
    return JSONResponse(
        {
            "@odata.context": _context(request, "messages/$entity"),
            **_render(request, emulator, message, QueryOptions()),
        }
    )


async def delete_message(request: Request, emulator: Emulator) -> Response:
    """``DELETE /messages/{id}`` -> 204."""
    emulator.store.delete(user_of(request), request.path_params["message_id"])
    return Response(status_code=204)


async def send_draft(request: Request, emulator: Emulator) -> Response:
    """``POST /messages/{id}/send``: the draft leaves Drafts; its Sent Items copy gets a new id."""
    upn = user_of(request)
    draft = emulator.store.get_draft(upn, request.path_params["message_id"], "send the message")
    check_recipients_for_send(draft.props)
    emulator.send(upn, draft, stored=True)
    return Response(status_code=202)


async def get_mime(request: Request, emulator: Emulator) -> Response:
    """``GET /messages/{id}/$value``: the RFC 5322 text, served as ``text/plain`` like Graph."""
    upn = user_of(request)
    message = emulator.store.get(upn, request.path_params["message_id"])
    return Response(render_mime(message, emulator.store.mailbox(upn).upn), media_type="text/plain")


def _listing(request: Request, emulator: Emulator, folder: Folder | None) -> Response:
    options = QueryOptions.from_request(request)
    upn = user_of(request)
    folder_ids = emulator.store.mailbox(upn).folder_ids
    candidates = emulator.store.visible(upn, folder, property_value=options.required_property_value)
    matches = [
        m
        for m in candidates
        if options.filter is None or options.filter({"$it": message_record(m, folder_ids[m.folder])})
    ]
    page = matches[options.skip : options.skip + options.top]
    body: dict[str, Any] = {
        "@odata.context": _context(request, "messages"),
        "value": [message_json(m, folder_ids[m.folder], options) for m in page],
    }
    if options.skip + options.top < len(matches):
        url = request.url.remove_query_params(["$skip", "skip", "%24skip"])
        body["@odata.nextLink"] = str(url.include_query_params(**{"$skip": options.skip + options.top}))
    return JSONResponse(body)


async def list_messages(request: Request, emulator: Emulator) -> Response:
    """``GET /messages``: all folders."""
    return _listing(request, emulator, None)


async def list_folder_messages(request: Request, emulator: Emulator) -> Response:
    """``GET /mailFolders/{SentItems|Drafts|<id>}/messages``."""
    folder = emulator.store.resolve_folder(user_of(request), request.path_params["folder"])
    return _listing(request, emulator, folder)
