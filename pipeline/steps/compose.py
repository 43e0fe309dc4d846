"""Turn a stored email into the :class:`~pipeline.graph.OutgoingMessage` Graph receives."""

from __future__ import annotations

from email.utils import parseaddr

from pipeline.db.models import IncomingEmail
from pipeline.graph import OutgoingMessage
from pipeline.messages import SendEmail

__all__ = ["outgoing_message", "stored_send_email"]


def stored_send_email(email: IncomingEmail) -> SendEmail:
    """The validated SendEmail as ingest stored it."""
    return SendEmail.model_validate(email.payload)


def _pair(value: str) -> tuple[str, str | None]:
    name, address = parseaddr(value)
    return address, name or None


def outgoing_message(email: IncomingEmail) -> OutgoingMessage:
    """The message without its files: the attachment pool adds those to the draft one by one."""
    request = stored_send_email(email)
    return OutgoingMessage(
        from_address=_pair(request.from_),
        to=[_pair(a) for a in request.to],
        cc=[_pair(a) for a in request.cc],
        bcc=[_pair(a) for a in request.bcc],
        subject=request.subject,
        body_type=request.body.content_type,
        body_content=request.body.content,
        correlation_key=email.correlation_key,
    )
