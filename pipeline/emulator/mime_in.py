"""MIME input: ``sendMail`` and ``POST /messages`` with ``Content-Type: text/plain``.

Graph then expects the whole RFC 5322 message, base64-encoded, as the raw body; a body that is
not base64 is 400 ``ErrorMimeContentInvalidBase64String`` (graph-facts §1.1).  The message is
mapped onto the same :class:`ParsedMessage` the JSON path produces: recipients, subject, body,
``Message-ID`` as ``internetMessageId``, every ``X-`` header as an internet message header (the
five-header cap of the JSON API does not apply to MIME) and the attachments.
"""

from __future__ import annotations

import base64
import binascii
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from .errors import GraphError
from .validation import ParsedAttachment, ParsedMessage

__all__ = ["parse_mime_body"]


def _invalid_base64() -> GraphError:
    return GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")


def _recipients(mime: EmailMessage, header: str) -> list[dict[str, Any]]:
    pairs = getaddresses([str(v) for v in mime.get_all(header, [])])
    return [{"emailAddress": {"name": name or address, "address": address}} for name, address in pairs if address]


def _body(mime: EmailMessage) -> dict[str, str]:
    part = mime.get_body(preferencelist=("html", "plain"))
    if part is None:
        return {"contentType": "text", "content": ""}
    content = part.get_content()
    return {
        "contentType": "html" if part.get_content_subtype() == "html" else "text",
        "content": content if isinstance(content, str) else content.decode("utf-8", "replace"),
    }


def _attachments(mime: EmailMessage) -> list[ParsedAttachment]:
    attachments = []
    for part in mime.iter_attachments():
        payload = part.get_payload(decode=True)
        content_id = part.get("Content-ID")
        attachments.append(
            ParsedAttachment(
                name=part.get_filename() or "attachment",
                content_type=part.get_content_type(),
                data=payload if isinstance(payload, bytes) else b"",
                is_inline=part.get_content_disposition() == "inline",
                content_id=str(content_id).strip("<>") if content_id else None,
            )
        )
    return attachments


def parse_mime_body(raw: bytes) -> ParsedMessage:
    """Decode a base64 MIME request body into a :class:`ParsedMessage`."""
    try:
        decoded = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid_base64() from exc
    mime = BytesParser(policy=policy.default).parsebytes(decoded)
    if not isinstance(mime, EmailMessage) or not mime.keys():
        raise _invalid_base64()
    props: dict[str, Any] = {"subject": str(mime.get("Subject", "")), "body": _body(mime)}
    for header, field_name in (("To", "toRecipients"), ("Cc", "ccRecipients"), ("Bcc", "bccRecipients")):
        props[field_name] = _recipients(mime, header)
    if mime.get("Message-ID"):
        props["internetMessageId"] = str(mime["Message-ID"]).strip()
    headers = [{"name": k, "value": str(v)} for k, v in mime.items() if k.lower().startswith("x-")]
    return ParsedMessage(props=props, headers=headers or None, attachments=_attachments(mime))
