"""RFC 5322 rendering of a stored message, for ``GET .../messages/{id}/$value``.

Built with the stdlib :mod:`email` package: ``From``/``To``/``Cc``/``Bcc``, ``Subject``,
``Date``, ``Message-ID`` (= ``internetMessageId``), the message's ``X-`` internet headers, the
body, and each attachment base64-encoded.  When the emulator was told not to keep attachment
bytes, each attachment becomes a small ``text/plain`` placeholder part that names the original
size and sha256 in ``X-Emulator-*`` headers, so tests can still verify what was sent.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from .models import StoredAttachment, StoredMessage
from .render import body_text

__all__ = ["PLACEHOLDER_HEADER", "render_mime"]

PLACEHOLDER_HEADER = "X-Emulator-Placeholder"

#: CRLF like Exchange; lines up to RFC 5322's hard limit so digests and ids are never folded.
_POLICY = policy.SMTP.clone(max_line_length=998)


def _addresses(value: Any) -> str:
    formatted = []
    for recipient in value or []:
        email_address = recipient.get("emailAddress", {}) if isinstance(recipient, dict) else {}
        formatted.append(formataddr((email_address.get("name") or "", email_address.get("address") or "")))
    return ", ".join(formatted)


def _attachment_part(attachment: StoredAttachment) -> EmailMessage:
    part = EmailMessage(policy=_POLICY)
    disposition = "inline" if attachment.is_inline else "attachment"
    if attachment.data is not None:
        maintype, _, subtype = attachment.content_type.partition("/")
        part.set_content(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            disposition=disposition,
            filename=attachment.name,
        )
    else:
        part.set_content(
            f"Attachment {attachment.name!r} ({attachment.size} bytes, sha256 {attachment.sha256}) "
            "was not kept by the emulator.\n",
            disposition=disposition,
            filename=attachment.name,
        )
        part[PLACEHOLDER_HEADER] = "true"
        part["X-Emulator-Size"] = str(attachment.size)
        part["X-Emulator-Sha256"] = attachment.sha256
        part["X-Emulator-Content-Type"] = attachment.content_type
    if attachment.content_id:
        part["Content-ID"] = f"<{attachment.content_id}>"
    return part


def render_mime(message: StoredMessage, mailbox_upn: str) -> bytes:
    """The whole message as MIME bytes (CRLF line endings, as Exchange serves it)."""
    mime = EmailMessage(policy=_POLICY)
    sender = message.props.get("from") or {"emailAddress": {"address": mailbox_upn}}
    mime["From"] = _addresses([sender])
    for header, field_name in (("To", "toRecipients"), ("Cc", "ccRecipients"), ("Bcc", "bccRecipients")):
        if message.props.get(field_name):
            mime[header] = _addresses(message.props[field_name])
    if message.props.get("replyTo"):
        mime["Reply-To"] = _addresses(message.props["replyTo"])
    mime["Subject"] = str(message.props.get("subject") or "")
    mime["Date"] = format_datetime(message.sent or message.created)
    mime["Message-ID"] = message.internet_message_id
    for custom in message.headers or []:
        mime[custom["name"]] = custom["value"]
    content_type, content = body_text(message)
    mime.set_content(content, subtype="html" if content_type == "html" else "plain")
    if message.attachments:
        mime.make_mixed()
        for attachment in message.attachments:
            mime.attach(_attachment_part(attachment))
    return mime.as_bytes()
