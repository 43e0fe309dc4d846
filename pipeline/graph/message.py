"""The message mailpipe hands to Graph, as msgraph's ``Message`` model and as ``sendMail`` JSON.

:class:`OutgoingMessage` does not know the publisher's schema; the send step builds one from
whatever it stored. Every message carries a *correlation key* twice:

* as a single-value extended property in mailpipe's own namespace (:data:`PROP_ID`), which
  Graph can ``$filter`` on, so a message whose send outcome is unknown can be found again in
  Sent Items or Drafts (Graph returns no id for ``sendMail`` and changes the id on send);
* as the internet message header ``x-mailpipe-correlation``, visible in the delivered mail.

Graph's rules enforced here, before any request: custom header names start with ``x-``,
at most 5 headers and never an empty list, and a whole request body below 4 MB.

Two forms of the same message: :func:`to_graph_message` builds the SDK's model (drafts are
created from it) and :func:`send_mail_json` writes the ``sendMail`` body directly, byte for
byte what kiota would write for that model. Every send builds one, and the model's backing
store made it cost about 0.7 ms of CPU per email; ``tests/graph/test_graph_message.py`` holds
the two forms equal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from kiota_abstractions.serialization import Parsable
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph.generated.models.attachment import Attachment
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.internet_message_header import InternetMessageHeader
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import (
    SingleValueLegacyExtendedProperty,
)

from pipeline.errors import GraphRejected
from pipeline.graph.errors import MessageTooLarge

__all__ = [
    "CORRELATION_HEADER",
    "MAX_REQUEST_BYTES",
    "PROP_ID",
    "InlineAttachment",
    "MailAddress",
    "OutgoingMessage",
    "check_request_size",
    "send_mail_json",
    "serialized_size",
    "to_graph_message",
]

#: Id of the single-value extended property holding the correlation key (MAPI named property
#: in mailpipe's own GUID namespace; the ``Name`` part is case-sensitive in ``$filter``).
PROP_ID = "String {6c6d8d1b-4b0e-4f4a-9c5e-6d61696c7069} Name MailpipeCorrelationKey"

#: Internet message header carrying the correlation key.
CORRELATION_HEADER = "x-mailpipe-correlation"

#: Graph's whole-request limit, "4 MB", read as 4 MiB (the emulator enforces the same). With
#: inline files below 3,000,000 bytes (base64: 4,000,000) a request stays under it.
MAX_REQUEST_BYTES = 4 * 1024 * 1024

_MAX_HEADERS = 5


class MailAddress(NamedTuple):
    """One mailbox: address and optional display name. A plain ``(address, name)`` tuple fits."""

    address: str
    name: str | None = None


class InlineAttachment(NamedTuple):
    """A small file carried inside the JSON body as base64 ``contentBytes``.

    "Inline" means inline in the request, not ``Content-Disposition: inline``; files at or
    above ``settings.inline_attachment_limit_bytes`` go through an upload session instead.
    """

    name: str
    content_type: str
    data: bytes


def _addresses(value: Iterable[tuple[str, str | None]]) -> tuple[MailAddress, ...]:
    return tuple(MailAddress(address, name) for address, name in value)


@dataclass(frozen=True)
class OutgoingMessage:
    """One email as mailpipe sends it. Immutable; lists given to the constructor become tuples.

    Addresses are ``(address, display name or None)`` pairs and files ``(name, content type,
    bytes)`` triples; after construction they are :class:`MailAddress` and
    :class:`InlineAttachment` tuples, so both unpacking and attribute access work.

    ``extra_headers`` are further ``x-`` internet message headers (at most 4, since the
    correlation header takes one of Graph's 5). Construction raises
    :class:`~pipeline.errors.GraphRejected` for what Graph would refuse anyway: an empty or
    multi-line correlation key, a header name not starting with ``x-``, too many headers.
    """

    from_address: tuple[str, str | None]
    to: Sequence[tuple[str, str | None]]
    subject: str
    body_content: str
    correlation_key: str
    body_type: Literal["text", "html"] = "text"
    cc: Sequence[tuple[str, str | None]] = ()
    bcc: Sequence[tuple[str, str | None]] = ()
    inline_attachments: Sequence[tuple[str, str, bytes]] = ()
    extra_headers: Sequence[tuple[str, str]] = field(default=())

    def __post_init__(self) -> None:
        sender = MailAddress(*self.from_address)
        object.__setattr__(self, "from_address", sender)
        object.__setattr__(self, "to", _addresses(self.to))
        object.__setattr__(self, "cc", _addresses(self.cc))
        object.__setattr__(self, "bcc", _addresses(self.bcc))
        object.__setattr__(self, "inline_attachments", tuple(InlineAttachment(*a) for a in self.inline_attachments))
        object.__setattr__(self, "extra_headers", tuple((n, v) for n, v in self.extra_headers))
        if self.body_type not in ("text", "html"):
            raise GraphRejected(f"body_type must be 'text' or 'html', not {self.body_type!r}")
        _check_header_value("correlation_key", self.correlation_key)
        if not self.correlation_key:
            raise GraphRejected("correlation_key must not be empty")
        if len(self.extra_headers) + 1 > _MAX_HEADERS:
            raise GraphRejected(
                f"at most {_MAX_HEADERS - 1} extra headers are allowed, got {len(self.extra_headers)}",
                code="InvalidInternetMessageHeaderCollection",
            )
        for name, value in self.extra_headers:
            if not name.lower().startswith("x-") or name.lower() == CORRELATION_HEADER:
                raise GraphRejected(
                    f"internet message header name {name!r} must start with 'x-' and not be {CORRELATION_HEADER!r}",
                    code="InvalidInternetMessageHeader",
                )
            _check_header_value(name, value)


def _check_header_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise GraphRejected(f"{name} must not contain CR or LF", code="InvalidInternetMessageHeader")


def _recipient(address: tuple[str, str | None]) -> Recipient:
    addr, name = address
    return Recipient(email_address=EmailAddress(address=addr, name=name))


def to_graph_message(message: OutgoingMessage) -> Message:
    """Build msgraph's ``Message`` for ``message``: sender, recipients, body, correlation tags, files."""
    headers = [InternetMessageHeader(name=CORRELATION_HEADER, value=message.correlation_key)]
    headers += [InternetMessageHeader(name=n, value=v) for n, v in message.extra_headers]
    attachments: list[Attachment] = [
        FileAttachment(name=name, content_type=content_type, content_bytes=data, is_inline=False)
        for name, content_type, data in message.inline_attachments
    ]
    return Message(
        from_=_recipient(message.from_address),
        to_recipients=[_recipient(a) for a in message.to],
        cc_recipients=[_recipient(a) for a in message.cc] or None,
        bcc_recipients=[_recipient(a) for a in message.bcc] or None,
        subject=message.subject,
        body=ItemBody(
            content_type=BodyType.Html if message.body_type == "html" else BodyType.Text,
            content=message.body_content,
        ),
        internet_message_headers=headers,
        single_value_extended_properties=[SingleValueLegacyExtendedProperty(id=PROP_ID, value=message.correlation_key)],
        attachments=attachments or None,
    )


def _recipient_json(address: tuple[str, str | None]) -> dict[str, Any]:
    addr, name = address
    email_address = {"address": addr}
    if name is not None:
        email_address["name"] = name
    return {"emailAddress": email_address}


def _message_json(message: OutgoingMessage) -> dict[str, Any]:
    # Keys in the order msgraph's Message.serialize writes them, so the bytes match too.
    result: dict[str, Any] = {"@odata.type": "#microsoft.graph.message"}
    if message.inline_attachments:
        result["attachments"] = [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "contentType": content_type,
                "isInline": False,
                "name": name,
                "contentBytes": base64.b64encode(data).decode("ascii"),
            }
            for name, content_type, data in message.inline_attachments
        ]
    if message.bcc:
        result["bccRecipients"] = [_recipient_json(a) for a in message.bcc]
    result["body"] = {"content": message.body_content, "contentType": message.body_type}
    if message.cc:
        result["ccRecipients"] = [_recipient_json(a) for a in message.cc]
    result["from"] = _recipient_json(message.from_address)
    result["internetMessageHeaders"] = [
        {"name": name, "value": value}
        for name, value in ((CORRELATION_HEADER, message.correlation_key), *message.extra_headers)
    ]
    result["singleValueExtendedProperties"] = [{"id": PROP_ID, "value": message.correlation_key}]
    result["subject"] = message.subject
    result["toRecipients"] = [_recipient_json(a) for a in message.to]
    return result


def send_mail_json(message: OutgoingMessage, *, save_to_sent_items: bool) -> bytes:
    """Return the ``sendMail`` request body for ``message``, as kiota would serialize it.

    ``save_to_sent_items`` False adds ``"SaveToSentItems": false`` (Graph: "specify it only if
    the parameter is false"). Raises :class:`MessageTooLarge` if Graph would refuse the body.
    """
    body: dict[str, Any] = {"Message": _message_json(message)}
    if not save_to_sent_items:
        body["SaveToSentItems"] = False
    content = json.dumps(body).encode("utf-8")
    _check_size(len(content), what="sendMail")
    return content


def serialized_size(body: Parsable) -> int:
    """Return the size in bytes of ``body`` as the SDK will send it (JSON)."""
    writer = JsonSerializationWriter()
    writer.write_object_value(None, body)
    return len(writer.get_serialized_content())


def check_request_size(body: Parsable, *, what: str) -> int:
    """Return the JSON size of ``body``; raise :class:`MessageTooLarge` if Graph would refuse it."""
    size = serialized_size(body)
    _check_size(size, what=what)
    return size


def _check_size(size: int, *, what: str) -> None:
    if size >= MAX_REQUEST_BYTES:
        raise MessageTooLarge(
            f"{what} request body is {size} bytes; Graph refuses requests of 4 MB or more "
            "(send large files through an upload session)",
            status_code=None,
            code="ErrorMessageSizeExceeded",
        )
