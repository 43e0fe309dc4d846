"""Settings of one emulator instance.

:class:`EmulatorConfig` is immutable: a change at run time (``POST /_emulator/config``) builds a
new validated instance and swaps it in, so a request in flight keeps reading one consistent
snapshot.  Sizes are bytes, durations seconds, rates a fraction in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_INLINE_ATTACHMENT_BYTES",
    "MAX_UPLOAD_ATTACHMENT_BYTES",
    "MIB",
    "MIN_UPLOAD_ATTACHMENT_BYTES",
    "EmulatorConfig",
]

MIB = 1024 * 1024

#: Graph documents "under 3 MB" for ``POST .../attachments`` and "between 3 MB and 150 MB" for
#: upload sessions; the emulator reads "MB" as MiB, the more lenient reading for clients.
MAX_INLINE_ATTACHMENT_BYTES = 3 * MIB
#: "3 MB" read as 3,000,000 bytes here, so every file a client cannot send inline (base64 of
#: 3,000,000 bytes is 4,000,000) can use an upload session: the two rules leave no gap.
MIN_UPLOAD_ATTACHMENT_BYTES = 3_000_000
MAX_UPLOAD_ATTACHMENT_BYTES = 150 * MIB


class EmulatorConfig(BaseModel):
    """Behaviour knobs of the Graph emulator; every field has a Graph-like default.

    Fault rates are drawn from one random generator seeded with ``seed``, so a run with the same
    seed and the same request order injects the same faults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    static_token: str = Field(default="emulator-token", min_length=1)
    """The only bearer token accepted on ``/v1.0``; anything else is 401 InvalidAuthenticationToken."""

    latency_s: float = Field(default=0.0, ge=0.0)
    """Added to every Graph call that passes throttling, while it holds a concurrency slot."""

    sent_items_delay_s: float = Field(default=0.0, ge=0.0)
    """How long after a send the Sent Items copy stays invisible (transport is asynchronous)."""

    fail_503_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of Graph calls answered 503 ErrorServerBusy (Retry-After: 1) without any effect."""

    fail_504_after_send_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of successful sends (sendMail, /send) that take effect and then answer 504."""

    mailbox_requests_per_window: int | None = Field(default=None, ge=1)
    """Requests one mailbox may make per ``mailbox_window_s`` (sliding window); None = unlimited."""

    mailbox_window_s: float = Field(default=1.0, gt=0.0)

    mailbox_max_concurrency: int | None = Field(default=4, ge=1)
    """Graph calls one mailbox may have in flight; Outlook's real limit is 4.  None = unlimited."""

    denied_mailboxes: tuple[str, ...] = ()
    """Mailboxes outside the app's access policy (``New-ApplicationAccessPolicy``): every Graph call
    for one of them answers 403 ``ErrorAccessDenied``, as Exchange Online does, before any fault
    or throttling is applied (so it draws nothing from the seeded sequence). Case-insensitive."""

    throttle_retry_after_s: float = Field(default=1.0, ge=0.0)
    """Retry-After on concurrency 429s, and the floor of the rate-limit Retry-After."""

    max_request_bytes: int = Field(default=4 * MIB, ge=1)
    """Whole-request limit of Graph calls (JSON or MIME); larger requests get 413."""

    max_upload_chunk_bytes: int = Field(default=4 * MIB, ge=1)
    """Largest byte range one PUT to an upload URL may carry; larger gets 413."""

    upload_session_ttl_s: float = Field(default=900.0, gt=0.0)
    """Lifetime of an upload session; afterwards its URL answers 404."""

    keep_attachment_bytes: bool = True
    """When False only size and sha256 are kept and ``$value`` carries a placeholder part."""

    seed: int | None = None

    def updated(self, patch: dict[str, Any]) -> EmulatorConfig:
        """Return a validated copy with ``patch`` applied; unknown fields raise ``ValidationError``."""
        return EmulatorConfig.model_validate({**self.model_dump(), **patch})
