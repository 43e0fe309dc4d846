"""Attachment routes under ``/v1.0/users/{user}/messages/{message_id}/attachments``.

Small files (< 3 MB) are posted inline as base64; 3-150 MB files need an upload session, which
this module opens and :mod:`.routes_upload` fills (graph-facts §1.4-1.6).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bodies import read_json
from .config import MAX_INLINE_ATTACHMENT_BYTES, MAX_UPLOAD_ATTACHMENT_BYTES, MIN_UPLOAD_ATTACHMENT_BYTES
from .emulator import Emulator
from .errors import GraphError, bad_request, not_found
from .models import StoredAttachment
from .query import QueryOptions
from .render import attachment_json
from .routes_mail import root_url, user_of
from .store import stored_attachment
from .validation import parse_file_attachment

__all__ = [
    "add_attachment",
    "create_upload_session",
    "get_attachment",
    "get_attachment_value",
    "list_attachments",
]


def _context(request: Request, tail: str) -> str:
    message_id = request.path_params["message_id"]
    return f"{root_url(request)}/v1.0/$metadata#users('{user_of(request)}')/messages('{message_id}')/{tail}"


def _find(request: Request, emulator: Emulator) -> StoredAttachment:
    message = emulator.store.get(user_of(request), request.path_params["message_id"])
    wanted = request.path_params["attachment_id"]
    for attachment in message.attachments:
        if attachment.id == wanted:
            return attachment
    raise not_found()


async def add_attachment(request: Request, emulator: Emulator) -> Response:
    """``POST .../attachments`` with a fileAttachment; raw content must stay under 3 MB."""
    payload = await read_json(request, emulator.config.max_request_bytes)
    parsed = parse_file_attachment(payload)
    if len(parsed.data) > MAX_INLINE_ATTACHMENT_BYTES:
        # Graph's answer when an inline attachment is too big (microsoft-graph-docs #85).
        raise bad_request("Maximum request length exceeded.")
    attachment = stored_attachment(parsed, keep_bytes=emulator.config.keep_attachment_bytes)
    emulator.store.add_attachment(user_of(request), request.path_params["message_id"], attachment)
    body = {
        "@odata.context": _context(request, "attachments/$entity"),
        **attachment_json(attachment, with_bytes=True),
    }
    return JSONResponse(body, status_code=201)


async def list_attachments(request: Request, emulator: Emulator) -> Response:
    """``GET .../attachments``: metadata only, ``contentBytes`` when ``$select``-ed."""
    options = QueryOptions.from_request(request)
    message = emulator.store.get(user_of(request), request.path_params["message_id"])
    with_bytes = options.wants("contentBytes", default=False)
    value = []
    for attachment in message.attachments:
        rendered = attachment_json(attachment, with_bytes=with_bytes)
        value.append({k: v for k, v in rendered.items() if k in ("id", "@odata.type") or options.wants(k)})
    return JSONResponse({"@odata.context": _context(request, "attachments"), "value": value})


async def get_attachment(request: Request, emulator: Emulator) -> Response:
    """``GET .../attachments/{id}``, with ``contentBytes`` as Graph returns for one file."""
    attachment = _find(request, emulator)
    body = {
        "@odata.context": _context(request, "attachments/$entity"),
        **attachment_json(attachment, with_bytes=True),
    }
    return JSONResponse(body)


async def get_attachment_value(request: Request, emulator: Emulator) -> Response:
    """``GET .../attachments/{id}/$value``: the raw bytes (404 if the emulator did not keep them)."""
    attachment = _find(request, emulator)
    if attachment.data is None:
        raise not_found("The emulator kept only the size and sha256 of this attachment.")
    return Response(attachment.data, media_type=attachment.content_type)


def _attachment_item(payload: Any) -> dict[str, Any]:
    fields = {k.lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
    item = fields.get("attachmentitem")
    if not isinstance(item, dict):
        raise bad_request("Required parameter 'AttachmentItem' is missing.", code="ErrorInvalidParameter")
    item = {k.lower(): v for k, v in item.items()}
    if str(item.get("attachmenttype", "")).lower() != "file":
        raise bad_request("AttachmentItem.attachmentType must be 'file'.", code="ErrorInvalidParameter")
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise bad_request("AttachmentItem.name is required.", code="ErrorInvalidParameter")
    size = item.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise bad_request("AttachmentItem.size must be an integer.", code="ErrorInvalidParameter")
    if size < MIN_UPLOAD_ATTACHMENT_BYTES:
        raise GraphError(
            400,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        )
    if size > MAX_UPLOAD_ATTACHMENT_BYTES:
        raise GraphError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size.")
    return item


async def create_upload_session(request: Request, emulator: Emulator) -> Response:
    """``POST .../attachments/createUploadSession`` -> 201 uploadSession with a pre-authenticated URL."""
    payload = await read_json(request, emulator.config.max_request_bytes)
    item = _attachment_item(payload)
    upn = user_of(request)
    message_id = request.path_params["message_id"]
    emulator.store.get_draft(upn, message_id, "add an attachment")
    config = emulator.config
    session = emulator.uploads.create(
        upn=upn,
        message_id=message_id,
        item=item,
        ttl_s=config.upload_session_ttl_s,
        keep_bytes=config.keep_attachment_bytes,
    )
    body = {
        "@odata.context": f"{root_url(request)}/v1.0/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": f"{root_url(request)}/upload/{session.id}?authtoken={session.token}",
        "expirationDateTime": session.progress_body()["ExpirationDateTime"],
        "nextExpectedRanges": ["0-"],
    }
    return JSONResponse(body, status_code=201)
