"""Graph JSON for stored messages and attachments.

:func:`message_record` is the complete view of a message (also what ``$filter`` runs against);
:func:`message_json` cuts it down the way Graph does: ``internetMessageHeaders`` only when
``$select``-ed, ``singleValueExtendedProperties`` and ``attachments`` only when ``$expand``-ed,
and with ``$select`` just the chosen properties plus ``id`` and ``@odata.etag``.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from .clock import iso
from .models import StoredAttachment, StoredMessage
from .query import QueryOptions

__all__ = ["attachment_json", "body_text", "message_json", "message_record"]

_HIDDEN_BY_DEFAULT = ("internetMessageHeaders", "singleValueExtendedProperties", "attachments")
_TAGS = re.compile(r"<[^>]+>")


def body_text(message: StoredMessage) -> tuple[str, str]:
    """``(contentType, content)`` of the body, contentType normalised to ``text``/``html``."""
    body = message.props.get("body") or {}
    content_type = str(body.get("contentType") or "text").lower() if isinstance(body, dict) else "text"
    content = str(body.get("content") or "") if isinstance(body, dict) else ""
    return ("html" if content_type == "html" else "text"), content


def attachment_json(attachment: StoredAttachment, *, with_bytes: bool) -> dict[str, Any]:
    """A ``fileAttachment``; ``contentBytes`` only when asked for (None if bytes were dropped)."""
    rendered: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "@odata.mediaContentType": attachment.content_type,
        "id": attachment.id,
        "lastModifiedDateTime": iso(attachment.last_modified) if attachment.last_modified else None,
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": attachment.size,
        "isInline": attachment.is_inline,
        "contentId": attachment.content_id,
        "contentLocation": None,
    }
    if with_bytes:
        data = attachment.data
        rendered["contentBytes"] = base64.b64encode(data).decode() if data is not None else None
    return rendered


def message_record(message: StoredMessage, folder_id: str) -> dict[str, Any]:
    """Every property of ``message`` in Graph's JSON shape."""
    props = message.props
    content_type, content = body_text(message)
    preview_source = _TAGS.sub(" ", content) if content_type == "html" else content
    received = message.sent or message.created
    return {
        "@odata.etag": f'W/"{message.change_key}"',
        "id": message.id,
        "createdDateTime": iso(message.created),
        "lastModifiedDateTime": iso(message.last_modified),
        "changeKey": message.change_key,
        "categories": props.get("categories") or [],
        "receivedDateTime": iso(received),
        "sentDateTime": iso(message.sent) if message.sent else None,
        "hasAttachments": any(not a.is_inline for a in message.attachments),
        "internetMessageId": message.internet_message_id,
        "subject": props.get("subject") or "",
        "bodyPreview": " ".join(preview_source.split())[:255],
        "importance": props.get("importance") or "normal",
        "parentFolderId": folder_id,
        "conversationId": message.conversation_id,
        "isDeliveryReceiptRequested": bool(props.get("isDeliveryReceiptRequested", False)),
        "isReadReceiptRequested": bool(props.get("isReadReceiptRequested", False)),
        "isRead": bool(props.get("isRead", True)),
        "isDraft": message.is_draft,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={message.id}&exvsurl=1&viewmodel=ReadMessageItem",
        "inferenceClassification": props.get("inferenceClassification") or "focused",
        "body": {"contentType": content_type, "content": content},
        "sender": props.get("sender"),
        "from": props.get("from"),
        "toRecipients": props.get("toRecipients") or [],
        "ccRecipients": props.get("ccRecipients") or [],
        "bccRecipients": props.get("bccRecipients") or [],
        "replyTo": props.get("replyTo") or [],
        "flag": props.get("flag") or {"flagStatus": "notFlagged"},
        "internetMessageHeaders": message.headers,
        "singleValueExtendedProperties": [dict(p) for p in message.extended_properties],
        "attachments": [attachment_json(a, with_bytes=False) for a in message.attachments],
    }


def message_json(message: StoredMessage, folder_id: str, options: QueryOptions) -> dict[str, Any]:
    """The message as a Graph response shows it under ``options``."""
    record = message_record(message, folder_id)
    rendered = {
        key: value
        for key, value in record.items()
        if key in ("id", "@odata.etag") or options.wants(key, default=key not in _HIDDEN_BY_DEFAULT)
    }
    for name in ("singleValueExtendedProperties", "attachments"):
        rendered.pop(name, None)
        if name.lower() not in options.expand:
            continue
        predicate = options.expand[name.lower()]
        items = record[name]
        if predicate is not None:
            items = [item for item in items if predicate({"$it": item})]
        rendered[name] = items
    return rendered
