"""One exception hierarchy for the whole pipeline.

Every foreign error (Graph/kiota, httpx, SQLAlchemy, aio-pika) is translated at the boundary
where it is caught, with ``raise ... from exc``, into one of these. The consumer edge
(:mod:`pipeline.outcome`) then decides from the class alone what happens to the message::

    MailpipeError
     +-- PermanentError            -> dead-letter now; retrying cannot help
     |    +-- InvalidMessage       bad publisher input (not JSON, schema, CR/LF in headers, too big)
     |    +-- GraphRejected        Graph said no for good (400/403/404/413: bad recipient, send-as denied)
     |    +-- AttachmentError      attachment URL 404, size mismatch, scheme not http(s)
     +-- TransientError            -> park the email and retry later with backoff
     |    +-- GraphUnavailable     429/503/5xx, timeouts, connection errors talking to Graph
     |    |    +-- SendOutcomeUnknown   the send call may have happened (504, timeout after the
     |    |                             request was written, crash): check Graph before resending
     |    +-- AttachmentUnavailable    attachment download failed for a passing reason
     |    +-- StoreUnavailable     database unreachable or locked
     |    +-- SpoolUnavailable     the local temporary directory is full or unwritable (backup spool)
     |    +-- BrokerUnavailable    RabbitMQ unreachable, publish not confirmed
     +-- ConfigError               bad settings; raised at start-up, never while consuming

``retry_after_s`` on a :class:`TransientError` carries the server's ``Retry-After`` (seconds,
possibly fractional) when it sent one; the retry policy obeys it exactly.
"""

from __future__ import annotations

__all__ = [
    "AttachmentError",
    "AttachmentUnavailable",
    "BrokerUnavailable",
    "ConfigError",
    "GraphRejected",
    "GraphUnavailable",
    "InvalidMessage",
    "MailpipeError",
    "PermanentError",
    "SendOutcomeUnknown",
    "SpoolUnavailable",
    "StoreUnavailable",
    "TransientError",
]


class MailpipeError(Exception):
    """Base of every error mailpipe raises on purpose."""

    #: Short machine-readable reason, used in dead-letter headers, metrics and ``dlq`` rows.
    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(MailpipeError):
    """Raised when retrying cannot succeed; the email is dead-lettered at once."""

    reason = "permanent"


class InvalidMessage(PermanentError):
    """Raised when a publisher's message fails validation at the edge."""

    reason = "invalid-message"


class GraphRejected(PermanentError):
    """Raised when Graph refuses a request for a reason a retry will not change."""

    reason = "graph-rejected"

    def __init__(self, message: str, *, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


class AttachmentError(PermanentError):
    """Raised when an attachment cannot ever be fetched or does not match its declaration."""

    reason = "attachment-invalid"


class ConfigError(MailpipeError):
    """Raised at start-up when a setting is missing or inconsistent; names the setting."""

    reason = "config"


class TransientError(MailpipeError):
    """Raised when the same work may succeed later; the email is parked and retried."""

    reason = "transient"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


class GraphUnavailable(TransientError):
    """Raised on throttling (429), server errors and network failures talking to Graph."""

    reason = "graph-unavailable"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        retry_after_s: float | None = None,
        mailbox: str | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status_code = status_code
        self.code = code
        self.mailbox = mailbox
        # Subclasses name their own reason; the plain class says which status it saw.
        if type(self).reason == GraphUnavailable.reason:
            if status_code == 429:
                self.reason = "graph-throttled"
            elif status_code is not None:
                self.reason = f"graph-{status_code}"


class SendOutcomeUnknown(GraphUnavailable):
    """Raised when a send call failed in a way that may hide a send that happened."""

    reason = "send-outcome-unknown"


class AttachmentUnavailable(TransientError):
    """Raised when an attachment download fails for a reason that may pass (5xx, reset)."""

    reason = "attachment-unavailable"


class StoreUnavailable(TransientError):
    """Raised when the database cannot be reached or stays locked."""

    reason = "store-unavailable"


class SpoolUnavailable(TransientError):
    """Raised when a large backup cannot be spooled to the temporary directory (full, unwritable)."""

    reason = "spool-unavailable"


class BrokerUnavailable(TransientError):
    """Raised when RabbitMQ cannot be reached or does not confirm a publish."""

    reason = "broker-unavailable"
