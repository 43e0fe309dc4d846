"""The stored shape of messages and attachments, and Graph-style id minting.

A :class:`StoredMessage` keeps the Graph JSON properties the caller set in ``props`` (subject,
body, recipients, ...) and everything the server owns in typed fields, so rendering
(:mod:`.render`) can rebuild Graph's JSON and :mod:`.mime` the RFC 5322 text.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "Folder",
    "StoredAttachment",
    "StoredMessage",
    "new_change_key",
    "new_graph_id",
    "new_internet_message_id",
]

Folder = Literal["drafts", "sentitems"]


def new_graph_id(prefix: str = "AAMkAGI2") -> str:
    """An opaque, case-sensitive id shaped like Outlook's (URL-safe base64 ending in ``=``)."""
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(46)).decode()


def new_change_key() -> str:
    """A fresh ``changeKey``; also used, wrapped, as the ``@odata.etag``."""
    return base64.b64encode(secrets.token_bytes(12)).decode()


def new_internet_message_id() -> str:
    """An RFC 5322 ``Message-ID`` in angle brackets, unique per draft."""
    return f"<{secrets.token_hex(16)}@emulator.local>"


@dataclass
class StoredAttachment:
    """A file attachment; ``data`` is None when the emulator keeps only size and digest."""

    id: str
    name: str
    content_type: str
    size: int
    sha256: str
    data: bytes | None
    is_inline: bool = False
    content_id: str | None = None
    last_modified: datetime | None = None

    def summary(self) -> dict[str, Any]:
        """The ``{name, size, sha256}`` triple the stats report per sent attachment."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass
class StoredMessage:
    """One item in a mailbox folder.

    ``visible_at`` is on the monotonic clock: a Sent Items copy exists from the moment of the
    send but is hidden from every read until transport has "moved" it there.
    """

    id: str
    mailbox: str
    folder: Folder
    props: dict[str, Any]
    internet_message_id: str
    conversation_id: str
    created: datetime
    last_modified: datetime
    change_key: str
    is_draft: bool = True
    sent: datetime | None = None
    headers: list[dict[str, str]] | None = None
    extended_properties: list[dict[str, str]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    visible_at: float = 0.0

    def header(self, name: str) -> str | None:
        """Value of internet message header ``name`` (case-insensitive), if set."""
        for item in self.headers or []:
            if item.get("name", "").lower() == name.lower():
                return item.get("value")
        return None

    def sent_copy(self, *, sent: datetime, visible_at: float) -> StoredMessage:
        """The Sent Items item for this message: a new id, same content, no longer a draft."""
        return replace(
            self,
            id=new_graph_id(),
            folder="sentitems",
            is_draft=False,
            sent=sent,
            last_modified=sent,
            change_key=new_change_key(),
            props=dict(self.props),
            extended_properties=list(self.extended_properties),
            attachments=list(self.attachments),
            visible_at=visible_at,
        )
