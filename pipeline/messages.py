"""Every message mailpipe reads or writes on RabbitMQ, typed once.

``schemas/`` is generated from these models by ``mailpipe schemas export``; never edit it by hand.
The publisher-facing contract is :class:`SendEmail` (in), :class:`CancelEmail` (in) and
:class:`SendEmailReceived` (out); the rest are internal hops and lifecycle events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import datetime
from email.utils import parseaddr
from typing import Annotated, Any, Literal, Self

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AnyUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_RECIPIENTS",
    "Attachment",
    "BackupRequest",
    "Body",
    "CancelEmail",
    "Dispatch",
    "EmailLifecycleEvent",
    "SendEmail",
    "SendEmailReceived",
    "derive_idempotency_key",
]

MAX_RECIPIENTS = 500
MAX_ATTACHMENT_BYTES = 150 * 1024 * 1024
MAX_INLINE_ATTACHMENT_BYTES = 3 * 1024 * 1024


def _no_line_breaks(value: str) -> str:
    # A CR or LF in a header field is how header injection starts; Graph would also refuse it.
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF characters")
    return value


def _email_address(value: str) -> str:
    _no_line_breaks(value)
    name, address = parseaddr(value)
    if not address:
        raise ValueError(f"{value!r} is not an email address")
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{address!r} is not a valid email address: {exc}") from exc
    if not name:
        return address
    # The stored form is parsed again when the email is sent: it must give back this very pair.
    # Unquoted, a name such as `Doe, Jane` or `<other@example.com>` parses as another address.
    formatted = f"{name} <{address}>"
    if parseaddr(formatted) != (name, address):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        formatted = f'"{escaped}" <{address}>'
        if parseaddr(formatted) != (name, address):
            raise ValueError(f"{value!r}: the display name cannot be kept apart from the address")
    return formatted


HeaderText = Annotated[str, AfterValidator(_no_line_breaks)]
EmailAddress = Annotated[
    str,
    Field(description="`user@example.com` or `Display Name <user@example.com>`", max_length=320),
    AfterValidator(_email_address),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Body(_Model):
    content_type: Literal["text", "html"] = Field(alias="contentType")
    content: str


class Attachment(_Model):
    """One file: either fetched by the worker from ``urlOrId`` or carried inline in ``contentBytes``."""

    name: HeaderText = Field(min_length=1, max_length=255)
    size: int = Field(gt=0, le=MAX_ATTACHMENT_BYTES, description="Exact size in bytes.")
    content_type: HeaderText = Field(default="application/octet-stream", alias="contentType", max_length=255)
    url_or_id: AnyUrl | None = Field(
        default=None, alias="urlOrId", description="An http(s) URL the worker downloads (streamed)."
    )
    content_bytes: str | None = Field(
        default=None, alias="contentBytes", description="Base64 file content, for files under 3 MB."
    )

    @field_validator("url_or_id")
    @classmethod
    def _http_only(cls, value: AnyUrl | None) -> AnyUrl | None:
        if value is not None and value.scheme not in {"http", "https"}:
            raise ValueError("urlOrId must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.url_or_id is None) == (self.content_bytes is None):
            raise ValueError("give exactly one of urlOrId and contentBytes")
        if self.content_bytes is not None:
            if self.size > MAX_INLINE_ATTACHMENT_BYTES:
                raise ValueError("contentBytes is for files under 3 MB; give larger files as urlOrId")
            try:
                decoded = base64.b64decode(self.content_bytes, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("contentBytes is not valid base64") from exc
            if len(decoded) != self.size:
                raise ValueError(f"size says {self.size} bytes but contentBytes holds {len(decoded)}")
        return self

    def decoded_bytes(self) -> bytes:
        """The inline content; only valid when ``content_bytes`` is set."""
        if self.content_bytes is None:
            raise ValueError("attachment has no inline content")
        return base64.b64decode(self.content_bytes)


class SendEmail(_Model):
    """A request to send one email. Publish to exchange ``mail.commands``, routing key ``send-email``."""

    publisher_message_id: HeaderText | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Your idempotency key. Absent: mailpipe derives one from the payload (see README).",
    )
    from_: EmailAddress = Field(alias="from")
    to: list[EmailAddress] = Field(default_factory=list)
    cc: list[EmailAddress] = Field(default_factory=list)
    bcc: list[EmailAddress] = Field(default_factory=list)
    subject: HeaderText = Field(max_length=998)
    body: Body
    attachments: list[Attachment] = Field(default_factory=list, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=5, ge=1, le=10, description="1 is most urgent, 10 least.")
    send_at: datetime | None = Field(default=None, description="ISO-8601 with a timezone; send no earlier.")

    @field_validator("send_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("send_at must include a timezone offset, e.g. 2026-01-01T09:00:00Z")
        return value

    @model_validator(mode="after")
    def _recipients(self) -> Self:
        count = len(self.to) + len(self.cc) + len(self.bcc)
        if count == 0:
            raise ValueError("at least one recipient is needed in to, cc or bcc")
        if count > MAX_RECIPIENTS:
            raise ValueError(f"{count} recipients; Graph accepts at most {MAX_RECIPIENTS} per message")
        return self

    @property
    def sender_address(self) -> str:
        """The bare address of ``from``: the Graph mailbox the email is sent as."""
        return parseaddr(self.from_)[1].lower()

    @property
    def has_attachments(self) -> bool:
        return bool(self.attachments)


def derive_idempotency_key(payload: dict[str, Any]) -> str:
    """A deterministic key for a payload that carries no ``publisher_message_id``.

    The canonical form is the JSON of the payload with sorted keys and no whitespace. Two
    byte-different but equal payloads get the same key; two genuinely separate emails with
    identical content are collapsed into one (see the README's caveat).
    """
    canonical = json.dumps(
        {k: v for k, v in payload.items() if k != "publisher_message_id"},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


class CancelEmail(_Model):
    """Cancel an email not yet dispatched. Exchange ``mail.commands``, routing key ``cancel-email``."""

    publisher_message_id: HeaderText = Field(min_length=1, max_length=255)


class SendEmailReceived(_Model):
    """Receipt: mailpipe has durably stored the SendEmail. Sent to ``reply_to`` and ``mail.events``."""

    publisher_message_id: str
    incoming_email_id: uuid.UUID
    received_at: datetime
    status: str


class Dispatch(_Model):
    """Scheduler -> worker pool, on exchange ``mail.dispatch`` with the route as routing key."""

    incoming_email_id: uuid.UUID
    publisher_message_id: str
    route: Literal["attachment", "no-attachment"]
    attempt: int = Field(ge=1)


class BackupRequest(_Model):
    """Send worker -> backup worker, on ``mail.dispatch`` with routing key ``backup``."""

    incoming_email_id: uuid.UUID
    publisher_message_id: str
    attempt: int = Field(ge=1)


class EmailLifecycleEvent(_Model):
    """Published on ``mail.events`` with routing key ``email.<event>`` at each state change."""

    event: str
    publisher_message_id: str
    incoming_email_id: uuid.UUID
    at: datetime
    detail: dict[str, Any] = Field(default_factory=dict)
