"""The mailbox store: Drafts and Sent Items of every mailbox the emulator has seen.

Mailboxes are keyed by UPN compared case-insensitively and created on first use (the emulator
has no directory).  Message ids are case-sensitive, as in Graph.  All methods take the store's
lock because the test thread reads the same objects (through stats) while the server thread
writes them; no method awaits while holding it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field

from .clock import monotonic, utc_now
from .errors import GraphError, not_found
from .models import (
    Folder,
    StoredAttachment,
    StoredMessage,
    new_change_key,
    new_graph_id,
    new_internet_message_id,
)
from .validation import ParsedAttachment, ParsedMessage

__all__ = ["MailStore", "Mailbox", "stored_attachment"]

_WELL_KNOWN: dict[str, Folder] = {"drafts": "drafts", "sentitems": "sentitems"}


def stored_attachment(parsed: ParsedAttachment, *, keep_bytes: bool) -> StoredAttachment:
    """Give a decoded attachment an id and a digest; drop the bytes unless asked to keep them."""
    return StoredAttachment(
        id=new_graph_id("AAMkAGI2Att"),
        name=parsed.name,
        content_type=parsed.content_type,
        size=len(parsed.data),
        sha256=hashlib.sha256(parsed.data).hexdigest(),
        data=parsed.data if keep_bytes else None,
        is_inline=parsed.is_inline,
        content_id=parsed.content_id,
        last_modified=utc_now(),
    )


@dataclass
class Mailbox:
    """One user's mail: the UPN as first seen, opaque folder ids and the items."""

    upn: str
    folder_ids: dict[Folder, str] = field(
        default_factory=lambda: {"drafts": new_graph_id("AQMkDrafts"), "sentitems": new_graph_id("AQMkSent")}
    )
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    #: Lower-cased extended property value -> ids of the messages carrying it: the index of the
    #: correlation look-up (Graph indexes it too; a scan made long runs slow as Sent Items grew).
    by_property_value: dict[str, set[str]] = field(default_factory=dict)

    def put(self, message: StoredMessage) -> None:
        """Store ``message`` (new, or with new extended properties) and index its property values."""
        self.drop(message.id)
        self.messages[message.id] = message
        for value in _property_values(message):
            self.by_property_value.setdefault(value, set()).add(message.id)

    def drop(self, message_id: str) -> None:
        """Forget a message, and its index entries; an unknown id is fine."""
        message = self.messages.pop(message_id, None)
        if message is None:
            return
        for value in _property_values(message):
            ids = self.by_property_value.get(value)
            if ids is not None:
                ids.discard(message_id)
                if not ids:
                    del self.by_property_value[value]


def _property_values(message: StoredMessage) -> set[str]:
    return {str(p.get("value", "")).lower() for p in message.extended_properties}


class MailStore:
    """Thread-safe store of mailboxes; raises :class:`GraphError` for Graph-visible failures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mailboxes: dict[str, Mailbox] = {}

    def reset(self) -> None:
        """Forget every mailbox and message."""
        with self._lock:
            self._mailboxes.clear()

    def mailbox(self, upn: str) -> Mailbox:
        """The mailbox for ``upn`` (case-insensitive), created empty on first use."""
        with self._lock:
            return self._mailboxes.setdefault(upn.lower(), Mailbox(upn=upn))

    def resolve_folder(self, upn: str, name_or_id: str) -> Folder:
        """Map a well-known name (any case) or an opaque folder id to a folder; 404 otherwise."""
        folder = _WELL_KNOWN.get(name_or_id.lower())
        if folder is not None:
            return folder
        for known, folder_id in self.mailbox(upn).folder_ids.items():
            if folder_id == name_or_id:
                return known
        raise GraphError(404, "ErrorInvalidIdMalformed", f"Id is malformed or unknown: '{name_or_id}'.")

    def create_draft(self, upn: str, parsed: ParsedMessage, *, keep_bytes: bool) -> StoredMessage:
        """Store a new draft in Drafts and return it."""
        message = self.new_message(upn, parsed, keep_bytes=keep_bytes)
        box = self.mailbox(upn)
        with self._lock:
            box.put(message)
        return message

    def new_message(self, upn: str, parsed: ParsedMessage, *, keep_bytes: bool) -> StoredMessage:
        """Build a draft without storing it (``sendMail`` sends it straight away).

        The ``internetMessageId`` is assigned here, as Exchange does on draft creation, unless the
        caller chose one.
        """
        now = utc_now()
        props = dict(parsed.props)
        internet_message_id = props.pop("internetMessageId", None) or new_internet_message_id()
        return StoredMessage(
            id=new_graph_id(),
            mailbox=upn.lower(),
            folder="drafts",
            props=props,
            internet_message_id=str(internet_message_id),
            conversation_id=new_graph_id("AAQkAGI2Conv"),
            created=now,
            last_modified=now,
            change_key=new_change_key(),
            headers=parsed.headers,
            extended_properties=list(parsed.extended_properties or []),
            attachments=[stored_attachment(a, keep_bytes=keep_bytes) for a in parsed.attachments],
        )

    def get(self, upn: str, message_id: str) -> StoredMessage:
        """A visible message by exact id; 404 ``ErrorItemNotFound`` if unknown or not yet visible."""
        box = self.mailbox(upn)
        with self._lock:
            message = box.messages.get(message_id)
        if message is None or message.visible_at > monotonic():
            raise not_found()
        return message

    def get_draft(self, upn: str, message_id: str, action: str) -> StoredMessage:
        """Like :meth:`get`, but a sent item is a 400: only drafts can be changed or sent."""
        message = self.get(upn, message_id)
        if not message.is_draft:
            raise GraphError(
                400,
                "ErrorInvalidOperation",
                f"Cannot {action}: the item has already been sent and is no longer a draft.",
            )
        return message

    def update_draft(self, upn: str, message_id: str, parsed: ParsedMessage) -> StoredMessage:
        """Apply a PATCH to a draft (``internetMessageId`` is writable only while a draft)."""
        message = self.get_draft(upn, message_id, "update the message")
        box = self.mailbox(upn)
        with self._lock:
            props = dict(parsed.props)
            if "internetMessageId" in props:
                message.internet_message_id = str(props.pop("internetMessageId"))
            message.props.update(props)
            if parsed.headers is not None:
                message.headers = parsed.headers
            if parsed.extended_properties is not None:
                by_id = {p["id"].lower(): p for p in message.extended_properties}
                by_id.update({p["id"].lower(): p for p in parsed.extended_properties})
                box.drop(message.id)  # indexed again with its new property values
                message.extended_properties = list(by_id.values())
                box.put(message)
            message.last_modified = utc_now()
            message.change_key = new_change_key()
        return message

    def delete(self, upn: str, message_id: str) -> None:
        """Remove a message for good (Graph would move it to Deleted Items)."""
        self.get(upn, message_id)
        box = self.mailbox(upn)
        with self._lock:
            box.drop(message_id)

    def add_attachment(self, upn: str, message_id: str, attachment: StoredAttachment) -> None:
        """Attach to a draft; a sent or vanished message refuses (the upload finished too late)."""
        message = self.get_draft(upn, message_id, "add an attachment")
        with self._lock:
            message.attachments.append(attachment)
            message.last_modified = utc_now()
            message.change_key = new_change_key()

    def send(self, upn: str, draft: StoredMessage, *, stored: bool, save: bool, delay_s: float) -> StoredMessage:
        """Turn ``draft`` into a sent item and return the Sent Items copy (a NEW id).

        A ``stored`` draft leaves Drafts at once; if it is already gone (a concurrent send won the
        race) this is a 404, so one draft is never sent twice.  ``sendMail`` passes an unstored
        message.  The copy lands in Sent Items only when ``save``, invisible for ``delay_s``.
        """
        box = self.mailbox(upn)
        copy = draft.sent_copy(sent=utc_now(), visible_at=monotonic() + delay_s)
        copy.props.setdefault("from", {"emailAddress": {"address": box.upn}})
        copy.props.setdefault("sender", copy.props["from"])
        with self._lock:
            if stored:
                if box.messages.get(draft.id) is not draft:
                    raise not_found()
                box.drop(draft.id)
            if save:
                box.put(copy)
        return copy

    def visible(self, upn: str, folder: Folder | None, *, property_value: str | None = None) -> list[StoredMessage]:
        """Messages of one folder (or all), newest first, hiding copies still "in transport".

        With ``property_value``, only messages with an extended property of that value (any
        case), found through the index.
        """
        now = monotonic()
        box = self.mailbox(upn)
        with self._lock:
            pool = (
                box.messages.values()
                if property_value is None
                else [box.messages[i] for i in box.by_property_value.get(property_value.lower(), ())]
            )
            items = [m for m in pool if m.visible_at <= now and (folder is None or m.folder == folder)]
        return sorted(items, key=lambda m: m.sent or m.created, reverse=True)
