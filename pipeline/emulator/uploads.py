"""Upload sessions for large attachments (3-150 MB), as Outlook runs them.

A session is created against a draft and addressed by an opaque, pre-authenticated URL
(``/upload/<session>?authtoken=<token>``).  Byte ranges must arrive in order; each accepted
range is hashed (and kept, if the config says so) the moment it is complete, so a session never
needs the whole file in one request and a client can resume after a crash from
``nextExpectedRanges``.  Sessions expire ``upload_session_ttl_s`` after creation.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clock import iso, monotonic, utc_now, wall_after
from .errors import GraphError
from .models import StoredAttachment, new_graph_id

__all__ = ["UploadSession", "UploadSessions"]


@dataclass
class UploadSession:
    """State of one upload: what is being uploaded, where to, and how far it got."""

    id: str
    token: str
    upn: str
    message_id: str
    name: str
    size: int
    content_type: str
    is_inline: bool
    content_id: str | None
    expires_mono: float
    expires_wall: datetime
    keep_bytes: bool
    next_offset: int = 0
    busy: bool = False
    digest: Any = field(default_factory=hashlib.sha256)
    data: bytearray = field(default_factory=bytearray)

    @property
    def complete(self) -> bool:
        """Whether every byte has arrived."""
        return self.next_offset >= self.size

    def progress_body(self) -> dict[str, Any]:
        """The 200 body of an intermediate PUT (and of GET): Outlook v2 casing, no trailing dash."""
        return {"ExpirationDateTime": iso(self.expires_wall), "nextExpectedRanges": [str(self.next_offset)]}

    def commit(self, chunk: bytes) -> None:
        """Append an in-order, fully received range."""
        self.digest.update(chunk)
        if self.keep_bytes:
            self.data.extend(chunk)
        self.next_offset += len(chunk)

    def to_attachment(self) -> StoredAttachment:
        """The finished attachment, ready to add to the draft."""
        return StoredAttachment(
            id=new_graph_id("AAMkAGI2Att"),
            name=self.name,
            content_type=self.content_type,
            size=self.size,
            sha256=self.digest.hexdigest(),
            data=bytes(self.data) if self.keep_bytes else None,
            is_inline=self.is_inline,
            content_id=self.content_id,
            last_modified=utc_now(),
        )


class UploadSessions:
    """Thread-safe registry of live upload sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, UploadSession] = {}

    def reset(self) -> None:
        """Drop every session (their URLs then answer 404)."""
        with self._lock:
            self._sessions.clear()

    def create(
        self,
        *,
        upn: str,
        message_id: str,
        item: dict[str, Any],
        ttl_s: float,
        keep_bytes: bool,
    ) -> UploadSession:
        """Open a session for the validated ``AttachmentItem`` ``item`` (keys lower-cased)."""
        content_id = item.get("contentid")
        session = UploadSession(
            id=new_graph_id("AAMkAGI2Sess"),
            token=secrets.token_urlsafe(32),
            upn=upn,
            message_id=message_id,
            name=str(item["name"]),
            size=int(item["size"]),
            content_type=str(item.get("contenttype") or "application/octet-stream"),
            is_inline=bool(item.get("isinline", False)),
            content_id=content_id if isinstance(content_id, str) else None,
            expires_mono=monotonic() + ttl_s,
            expires_wall=wall_after(ttl_s),
            keep_bytes=keep_bytes,
        )
        with self._lock:
            self._sessions[session.id] = session
        return session

    def get(self, session_id: str, token: str | None) -> UploadSession:
        """The live session for an upload URL; 404 if unknown or expired, 401 on a wrong token."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None and session.expires_mono <= monotonic():
                del self._sessions[session_id]
                session = None
        if session is None:
            raise GraphError(404, "ErrorItemNotFound", "The upload session does not exist or has expired.")
        if token is None or not secrets.compare_digest(token, session.token):
            raise GraphError(401, "InvalidAuthenticationToken", "The authtoken of the upload URL is invalid.")
        return session

    def discard(self, session_id: str) -> None:
        """Forget a finished or cancelled session."""
        with self._lock:
            self._sessions.pop(session_id, None)
