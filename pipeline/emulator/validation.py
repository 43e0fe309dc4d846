"""Validation of message and attachment payloads, with the error codes Graph uses.

Property names are matched case-insensitively and stored under Graph's camelCase spelling, as
Graph's OData reader does.  Rules enforced (see graph-facts §1.1, §1.4, §1.9):

* ``internetMessageHeaders``: names must start with ``x-``/``X-`` (InvalidInternetMessageHeader);
  the list must hold 1 to 5 entries (InvalidInternetMessageHeaderCollection) — an empty list is
  an error too, exactly like Graph;
* a send needs at least one resolvable recipient in to/cc/bcc and at most 500 in total
  (ErrorInvalidRecipients; Graph's exact code for "more than 500" is undocumented);
* attachments must name their ``@odata.type`` and carry valid base64 ``contentBytes``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import GraphError, bad_request

__all__ = [
    "MAX_RECIPIENTS",
    "ParsedAttachment",
    "ParsedMessage",
    "check_recipients_for_send",
    "parse_file_attachment",
    "parse_message",
]

MAX_RECIPIENTS = 500
MAX_CUSTOM_HEADERS = 5
FILE_ATTACHMENT_TYPE = "#microsoft.graph.fileAttachment"
RECIPIENT_FIELDS = ("toRecipients", "ccRecipients", "bccRecipients")

_WRITABLE = [
    "bccRecipients", "body", "categories", "ccRecipients", "flag", "from", "importance",
    "inferenceClassification", "internetMessageId", "isDeliveryReceiptRequested", "isRead",
    "isReadReceiptRequested", "replyTo", "sender", "subject", "toRecipients",
]  # fmt: skip
#: Read-only properties a client may echo back from a GET; Graph ignores them on write.
_IGNORED = ["id", "createdDateTime", "lastModifiedDateTime", "changeKey", "parentFolderId",
            "conversationId", "conversationIndex", "isDraft", "webLink", "sentDateTime",
            "receivedDateTime", "hasAttachments", "bodyPreview", "uniqueBody"]  # fmt: skip
_SPECIAL = ["internetMessageHeaders", "singleValueExtendedProperties", "attachments"]
_CANONICAL = {name.lower(): name for name in [*_WRITABLE, *_IGNORED, *_SPECIAL]}
_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+$")


@dataclass
class ParsedAttachment:
    """A file attachment decoded from JSON, before it gets an id."""

    name: str
    content_type: str
    data: bytes
    is_inline: bool = False
    content_id: str | None = None


@dataclass
class ParsedMessage:
    """A validated message payload split into plain props and the parts stored separately."""

    props: dict[str, Any] = field(default_factory=dict)
    headers: list[dict[str, str]] | None = None
    extended_properties: list[dict[str, str]] | None = None
    attachments: list[ParsedAttachment] = field(default_factory=list)


def _canonical_items(obj: dict[str, Any], type_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if key.startswith("@"):
            continue  # OData annotations such as @odata.type
        name = _CANONICAL.get(key.lower())
        if name is None:
            raise bad_request(
                f"The property '{key}' does not exist on type '{type_name}'. Make sure to only use "
                "property names that are defined by the type or mark the type as open type.",
                code="RequestBodyRead",
            )
        out[name] = value
    return out


def _check_headers(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value or len(value) > MAX_CUSTOM_HEADERS:
        raise GraphError(
            400,
            "InvalidInternetMessageHeaderCollection",
            "Maximum number of headers in one message should be less than or equal to 5, "
            "and the number of internet message headers is invalid (should be less or equal to 5).",
        )
    headers: list[dict[str, str]] = []
    for item in value:
        name = item.get("name") if isinstance(item, dict) else None
        header_value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(header_value, str):
            raise bad_request("Each internet message header needs a string 'name' and 'value'.")
        if not name.lower().startswith("x-"):
            raise GraphError(
                400,
                "InvalidInternetMessageHeader",
                f"The internet message header name '{name}' should start with 'x-' or 'X-'.",
            )
        if any(c in name + header_value for c in "\r\n"):
            raise GraphError(400, "InvalidInternetMessageHeader", "Header name or value contains CR/LF.")
        headers.append({"name": name, "value": header_value})
    return headers


def _check_extended_properties(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise bad_request("singleValueExtendedProperties must be a collection.")
    props: list[dict[str, str]] = []
    for item in value:
        prop_id = item.get("id") if isinstance(item, dict) else None
        prop_value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(prop_id, str) or not isinstance(prop_value, str):
            raise bad_request("Each singleValueExtendedProperty needs a string 'id' and 'value'.")
        props.append({"id": prop_id, "value": prop_value})
    return props


def parse_file_attachment(obj: Any) -> ParsedAttachment:
    """Validate one ``#microsoft.graph.fileAttachment`` and decode its ``contentBytes``."""
    if not isinstance(obj, dict):
        raise bad_request("An attachment must be a JSON object.")
    odata_type = obj.get("@odata.type")
    if odata_type is None:
        raise bad_request("Cannot create an abstract class.")
    if str(odata_type).lower() != FILE_ATTACHMENT_TYPE.lower():
        raise bad_request(f"The emulator only supports {FILE_ATTACHMENT_TYPE}, not '{odata_type}'.")
    lowered = {k.lower(): v for k, v in obj.items()}
    name = lowered.get("name")
    content = lowered.get("contentbytes")
    if not isinstance(name, str) or not name:
        raise bad_request("The attachment 'name' is required.", code="ErrorInvalidRequest")
    if not isinstance(content, str):
        raise bad_request("The attachment 'contentBytes' is required.", code="ErrorInvalidRequest")
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request("Invalid base64 string for attachment content.") from exc
    content_id = lowered.get("contentid")
    return ParsedAttachment(
        name=name,
        content_type=str(lowered.get("contenttype") or "application/octet-stream"),
        data=data,
        is_inline=bool(lowered.get("isinline", False)),
        content_id=content_id if isinstance(content_id, str) else None,
    )


def parse_message(obj: Any) -> ParsedMessage:
    """Validate a ``message`` JSON object (create, sendMail or PATCH) and split it up."""
    if not isinstance(obj, dict):
        raise bad_request("The message must be a JSON object.", code="RequestBodyRead")
    items = _canonical_items(obj, "microsoft.graph.message")
    parsed = ParsedMessage()
    if "internetMessageHeaders" in items:
        parsed.headers = _check_headers(items.pop("internetMessageHeaders"))
    if "singleValueExtendedProperties" in items:
        parsed.extended_properties = _check_extended_properties(items.pop("singleValueExtendedProperties"))
    attachments = items.pop("attachments", None) or []
    if not isinstance(attachments, list):
        raise bad_request("attachments must be a collection.")
    parsed.attachments = [parse_file_attachment(a) for a in attachments]
    for name in RECIPIENT_FIELDS:
        if name in items and not isinstance(items[name], list):
            raise bad_request(f"{name} must be a collection of recipients.")
    parsed.props = {k: v for k, v in items.items() if k not in _IGNORED}
    return parsed


def _address(recipient: Any) -> str | None:
    if isinstance(recipient, dict) and isinstance(recipient.get("emailAddress"), dict):
        address = recipient["emailAddress"].get("address")
        return address if isinstance(address, str) else None
    return None


def check_recipients_for_send(props: dict[str, Any]) -> None:
    """Refuse a send without a valid recipient, or with more than 500, like Exchange does."""
    recipients = [r for name in RECIPIENT_FIELDS for r in props.get(name) or []]
    if not recipients:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid., A message can't be sent because it contains no recipients.",
        )
    if len(recipients) > MAX_RECIPIENTS:
        raise GraphError(
            400,
            "ErrorInvalidRecipients",
            f"The message has {len(recipients)} recipients; at most {MAX_RECIPIENTS} are allowed.",
        )
    for recipient in recipients:
        address = _address(recipient)
        if address is None or not _ADDRESS.match(address):
            raise GraphError(
                400,
                "ErrorInvalidRecipients",
                f"At least one recipient is not valid., Recipient '{address}' is not resolved. "
                "All recipients must be resolved before a message can be submitted.",
            )
