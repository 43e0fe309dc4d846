"""mailpipe's Microsoft Graph client, built on msgraph-sdk.

* :func:`build_graph_client` builds a ``GraphServiceClient`` with the SDK's retries off and the
  bearer token restricted to the Graph base URL.
* :class:`GraphMailer` performs each mail operation with exactly one request, through a
  per-mailbox :class:`GraphLimiter`, and translates every failure into :mod:`pipeline.errors`.
* :class:`OutgoingMessage` is what gets sent, tagged with a correlation key that
  :meth:`GraphMailer.find_by_correlation` can find again.
"""

from pipeline.graph import _sdk  # noqa: F401  (first: imports the SDK quietly)
from pipeline.graph.client import GraphTokenProvider, MailpipeGraphClient, build_graph_client
from pipeline.graph.errors import (
    MessageTooLarge,
    UploadRangeMismatch,
    UploadSessionGone,
    parse_retry_after,
    translate_error,
)
from pipeline.graph.limits import DEFAULT_THROTTLE_PAUSE_S, GraphLimiter, NoLimiter
from pipeline.graph.mailer import AttachmentInfo, DraftRef, GraphMailer, MessageInfo, correlation_filter
from pipeline.graph.message import (
    CORRELATION_HEADER,
    MAX_REQUEST_BYTES,
    PROP_ID,
    InlineAttachment,
    MailAddress,
    OutgoingMessage,
    to_graph_message,
)
from pipeline.graph.upload import UploadProgress, UploadSessionRef

__all__ = [
    "CORRELATION_HEADER",
    "DEFAULT_THROTTLE_PAUSE_S",
    "MAX_REQUEST_BYTES",
    "PROP_ID",
    "AttachmentInfo",
    "DraftRef",
    "GraphLimiter",
    "GraphMailer",
    "GraphTokenProvider",
    "InlineAttachment",
    "MailAddress",
    "MailpipeGraphClient",
    "MessageInfo",
    "MessageTooLarge",
    "NoLimiter",
    "OutgoingMessage",
    "UploadProgress",
    "UploadRangeMismatch",
    "UploadSessionGone",
    "UploadSessionRef",
    "build_graph_client",
    "correlation_filter",
    "parse_retry_after",
    "to_graph_message",
    "translate_error",
]
