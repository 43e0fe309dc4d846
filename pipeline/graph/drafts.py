"""Drafts and their attachments on Graph: the attachment route's calls, one request each.

A draft is how an email with attachments is sent: created in Drafts, given its files (small
ones inline, large ones through an upload session), then sent
(:meth:`~pipeline.graph.mailer.GraphMailer.send_draft`). Failure semantics are those of
:class:`~pipeline.graph.calls.GraphCalls`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
    CreateUploadSessionPostRequestBody,
)

from pipeline.errors import GraphUnavailable
from pipeline.graph._sdk import AttachmentsRequestBuilder
from pipeline.graph.calls import GraphCalls
from pipeline.graph.message import OutgoingMessage, check_request_size, to_graph_message
from pipeline.graph.upload import (
    UploadProgress,
    UploadSessionRef,
    content_range,
    parse_next_offset,
    progress_from_response,
    status_from_response,
)

__all__ = ["AttachmentInfo", "DraftCalls", "DraftRef"]


async def _once(chunk: bytes) -> AsyncIterator[bytes]:
    """``chunk`` as a request body that lets go of it once sent.

    An httpx response and its request form a reference cycle, so a request whose content is
    the bytes keeps them alive until the cyclic garbage collector runs: with 3.2 MB chunks
    the attachment worker held about 17 of them, 57 MB for one 100 MB file (2026-12-05).
    A generator's frame, and the chunk in it, is freed as soon as the body has been sent.
    """
    yield chunk


@dataclass(frozen=True, slots=True)
class DraftRef:
    """A draft just created: its id (valid until sent) and its ``internetMessageId``."""

    id: str
    internet_message_id: str | None


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """One attachment of a message, as listed by Graph."""

    id: str
    name: str | None
    size: int | None


class DraftCalls(GraphCalls):
    """Create drafts, attach files to them, and upload large files in sessions."""

    async def create_draft(self, mailbox: str, message: OutgoingMessage) -> DraftRef:
        """Create ``message`` as a draft in ``mailbox``'s Drafts folder (``POST .../messages``).

        If the answer is lost, the draft may exist anyway: find it with
        ``find_by_correlation(mailbox, key, "Drafts")`` before creating another.
        """
        body = to_graph_message(message)
        check_request_size(body, what="create draft")
        messages = self._graph.users.by_user_id(mailbox).messages
        created = await self._call(mailbox, "create draft", lambda: messages.post(body))
        if created is None or not created.id:
            raise GraphUnavailable(f"Graph create draft for {mailbox} answered without a message id", mailbox=mailbox)
        return DraftRef(id=created.id, internet_message_id=created.internet_message_id)

    async def add_attachment(
        self,
        mailbox: str,
        draft_id: str,
        name: str,
        content_type: str,
        data: bytes,
        *,
        is_inline: bool = False,
        content_id: str | None = None,
    ) -> str:
        """Attach a small file to a draft (``POST .../attachments``) and return the attachment id.

        ``data`` must be smaller than ``settings.inline_attachment_limit_bytes`` (Graph: under
        3 MB); larger files need :meth:`create_upload_session`. Raises ``ValueError`` otherwise.
        """
        limit = self._settings.inline_attachment_limit_bytes
        if len(data) >= limit:
            raise ValueError(f"{name}: {len(data)} bytes is not below the inline limit of {limit}")
        body = FileAttachment(
            name=name,
            content_type=content_type,
            content_bytes=data,
            is_inline=is_inline,
            content_id=content_id,
        )
        check_request_size(body, what="add attachment")
        attachments = self._message(mailbox, draft_id).attachments
        created = await self._call(mailbox, "add attachment", lambda: attachments.post(body))
        if created is None or not created.id:
            raise GraphUnavailable(
                f"Graph add attachment for {mailbox} answered without an attachment id", mailbox=mailbox
            )
        return created.id

    async def list_attachments(self, mailbox: str, draft_id: str) -> list[AttachmentInfo]:
        """Return every attachment of ``draft_id`` (id, name, size), following ``@odata.nextLink``."""
        builder = self._message(mailbox, draft_id).attachments
        query = AttachmentsRequestBuilder.AttachmentsRequestBuilderGetQueryParameters(select=["id", "name", "size"])
        config = RequestConfiguration(query_parameters=query)
        found: list[AttachmentInfo] = []
        page = await self._call(mailbox, "list attachments", lambda: builder.get(config))
        while page is not None:
            found += [AttachmentInfo(a.id, a.name, a.size) for a in page.value or [] if a.id]
            if not page.odata_next_link:
                break
            next_page = builder.with_url(page.odata_next_link)
            page = await self._call(mailbox, "list attachments", next_page.get)
        return found

    async def create_upload_session(
        self, mailbox: str, draft_id: str, name: str, size: int, content_type: str
    ) -> UploadSessionRef:
        """Open an upload session for a ``size``-byte file on ``draft_id`` (Graph: 3 MB to 150 MB).

        The returned URL is pre-authenticated and expires; it is a secret, do not log it.
        """
        body = CreateUploadSessionPostRequestBody(
            attachment_item=AttachmentItem(
                attachment_type=AttachmentType.File, name=name, size=size, content_type=content_type
            )
        )
        builder = self._message(mailbox, draft_id).attachments.create_upload_session
        session = await self._call(mailbox, "create upload session", lambda: builder.post(body))
        if session is None or not session.upload_url:
            raise GraphUnavailable(
                f"Graph create upload session for {mailbox} answered without an uploadUrl", mailbox=mailbox
            )
        ranges = {"nextExpectedRanges": session.next_expected_ranges or []}
        return UploadSessionRef(upload_url=session.upload_url, next_offset=parse_next_offset(ranges) or 0)

    async def upload_chunk(
        self, upload_url: str, offset: int, chunk: bytes, total: int, *, mailbox: str | None = None
    ) -> UploadProgress:
        """PUT ``chunk`` at ``offset`` of a ``total``-byte file to ``upload_url``, without any token.

        Keep chunks a multiple of 327,680 bytes and under 4 MB. Returns where to continue, or
        the new attachment's ``Location`` after the last byte. Raises
        :class:`~pipeline.graph.errors.UploadRangeMismatch` (416, carries ``expected_offset``),
        :class:`~pipeline.graph.errors.UploadSessionGone`, ``GraphUnavailable`` or
        ``GraphRejected``; never swallows an error. With ``mailbox`` the request also goes
        through the limiter (uploads count against the mailbox's budget).
        """
        headers = {
            "Content-Range": content_range(offset, len(chunk), total),
            "Content-Type": "application/octet-stream",
            # Stated, so httpx sends the streamed body below with a length, not chunked.
            "Content-Length": str(len(chunk)),
        }

        async def put() -> UploadProgress:
            response = await self._upload_http.put(upload_url, content=_once(chunk), headers=headers)
            return progress_from_response(response, end=offset + len(chunk), total=total, mailbox=mailbox)

        progress = await self._upload_call(mailbox, "upload chunk", put)
        self._observer.uploaded(len(chunk))
        return progress

    async def upload_status(self, upload_url: str, *, mailbox: str | None = None) -> int | None:
        """Return the offset the session expects next (``GET {uploadUrl}``), or ``None`` if it is gone.

        Use it to resume after a crash or a lost answer.
        """

        async def get() -> int | None:
            response = await self._upload_http.get(upload_url)
            return status_from_response(response, mailbox=mailbox)

        return await self._upload_call(mailbox, "upload status", get)
