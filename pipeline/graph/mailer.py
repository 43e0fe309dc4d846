"""Every Graph mail operation mailpipe performs, one method each, exactly one request each.

:class:`GraphMailer` never retries: each method makes one HTTP request (a listing may follow
``@odata.nextLink``) and either returns or raises a :mod:`pipeline.errors` exception that says
what to do next. The send methods (:meth:`GraphMailer.send_mail`, :meth:`GraphMailer.send_draft`)
raise :class:`~pipeline.errors.SendOutcomeUnknown` whenever the mail may have gone out anyway;
the caller must then look for it (:meth:`GraphMailer.find_by_correlation`) before sending again.

Every request waits for ``limiter.slot(mailbox)``; a 429 is reported to
``limiter.report_throttled`` (after the slot is released) before the error is raised.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.response_handler import ResponseHandler
from kiota_http.middleware.options import ResponseHandlerOption
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
from msgraph.graph_service_client import GraphServiceClient

from pipeline.errors import GraphRejected, GraphUnavailable
from pipeline.graph._sdk import (
    AttachmentsRequestBuilder,
    FolderMessagesRequestBuilder,
    MessageItemRequestBuilder,
)
from pipeline.graph.errors import error_from_response, graph_errors
from pipeline.graph.limits import DEFAULT_THROTTLE_PAUSE_S, GraphLimiter
from pipeline.graph.message import PROP_ID, OutgoingMessage, check_request_size, to_graph_message
from pipeline.graph.upload import (
    UploadProgress,
    UploadSessionRef,
    content_range,
    parse_next_offset,
    progress_from_response,
    status_from_response,
)
from pipeline.observability.graphcalls import GraphCallObserver
from pipeline.settings import Settings

__all__ = ["AttachmentInfo", "DraftRef", "GraphMailer", "MessageInfo", "correlation_filter"]

T = TypeVar("T")

_MESSAGE_FIELDS = ["id", "internetMessageId", "isDraft"]


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


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What mailpipe needs to know about a stored message."""

    id: str
    internet_message_id: str | None
    is_draft: bool


def correlation_filter(correlation_key: str) -> str:
    """Return the OData ``$filter`` matching messages tagged with ``correlation_key``.

    Single quotes in the key are doubled, as OData string literals require.
    """
    literal = correlation_key.replace("'", "''")
    return f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq '{literal}')"


class _ResponseCapture(ResponseHandler):
    """Keeps the raw response so a send can insist on 202 (kiota accepts any 2xx)."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None

    async def handle_response_async(self, response: Any, error_map: Any = None) -> None:
        self.response = response


class GraphMailer:
    """Mail operations on Graph for any mailbox the app may use.

    ``graph``: the SDK client (see :func:`~pipeline.graph.client.build_graph_client`).
    ``upload_http``: a plain ``httpx.AsyncClient`` for upload URLs; it must carry no
    ``Authorization`` header or auth (upload URLs are pre-authenticated and answer 401
    InvalidAudience to a Graph token). ``limiter``: paces calls per mailbox. ``observer``:
    metrics and spans of every call (none by default). The mailer closes none of them.
    """

    def __init__(
        self,
        graph: GraphServiceClient,
        upload_http: httpx.AsyncClient,
        limiter: GraphLimiter,
        settings: Settings,
        *,
        observer: GraphCallObserver | None = None,
    ) -> None:
        if "authorization" in upload_http.headers or upload_http.auth is not None:
            raise ValueError("upload_http must not send an Authorization header")
        self._graph = graph
        self._upload_http = upload_http
        self._limiter = limiter
        self._settings = settings
        self._observer = observer or GraphCallObserver()

    # --- plumbing ---------------------------------------------------------------------------

    async def _call(
        self,
        mailbox: str,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        is_send: bool = False,
    ) -> T:
        try:
            with self._observer.call(operation) as observed:
                async with self._limiter.slot(mailbox):
                    observed.slot_acquired()
                    with graph_errors(mailbox, operation, is_send=is_send):
                        return await call()
        except GraphUnavailable as exc:
            # A Retry-After (429, or a 503 that carries one) is Graph asking this mailbox to wait:
            # every worker in every process must hold back, not only this one.
            if exc.status_code == 429 or exc.retry_after_s is not None:
                pause = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_THROTTLE_PAUSE_S
                await self._limiter.report_throttled(mailbox, pause)
            raise

    async def _send(
        self,
        mailbox: str,
        operation: str,
        post: Callable[[RequestConfiguration[Any]], Awaitable[None]],
    ) -> None:
        capture = _ResponseCapture()
        config = RequestConfiguration[Any](options=[ResponseHandlerOption(capture)])

        async def call() -> None:
            await post(config)
            response = capture.response
            assert response is not None  # kiota hands every response to the handler
            if response.status_code != 202:
                raise error_from_response(response, mailbox=mailbox, operation=operation, is_send=True)

        await self._call(mailbox, operation, call, is_send=True)

    def _message(self, mailbox: str, message_id: str) -> MessageItemRequestBuilder:
        return self._graph.users.by_user_id(mailbox).messages.by_message_id(message_id)

    # --- sending ----------------------------------------------------------------------------

    async def send_mail(self, mailbox: str, message: OutgoingMessage) -> None:
        """Send ``message`` from ``mailbox`` in one ``POST /users/{mailbox}/sendMail`` (JSON).

        Returns when Graph answered 202, which means queued, not delivered.
        ``settings.graph_save_to_sent_items`` decides whether a Sent Items copy is kept; without
        one a lost answer can never be resolved. Raises :class:`~pipeline.graph.errors.MessageTooLarge`
        before any request if the body would reach 4 MB, ``GraphRejected`` for a refusal,
        ``SendOutcomeUnknown`` if the mail may have been sent, ``GraphUnavailable`` if it was not.
        """
        body = SendMailPostRequestBody(
            message=to_graph_message(message),
            # Graph: "Specify it only if the parameter is false".
            save_to_sent_items=None if self._settings.graph_save_to_sent_items else False,
        )
        check_request_size(body, what="sendMail")
        send_mail = self._graph.users.by_user_id(mailbox).send_mail
        await self._send(mailbox, "sendMail", lambda config: send_mail.post(body, config))

    async def send_draft(self, mailbox: str, draft_id: str) -> None:
        """Send the draft ``draft_id`` (``POST .../messages/{id}/send``); 202 -> return.

        Afterwards the draft id is no longer valid; the Sent Items copy has a new id. Failure
        modes are those of :meth:`send_mail`.
        """
        send = self._message(mailbox, draft_id).send
        await self._send(mailbox, "send draft", send.post)

    # --- drafts and attachments ---------------------------------------------------------------

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
        }

        async def put() -> UploadProgress:
            response = await self._upload_http.put(upload_url, content=chunk, headers=headers)
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

    async def _upload_call(self, mailbox: str | None, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if mailbox is not None:
            return await self._call(mailbox, operation, call)
        with self._observer.call(operation), graph_errors(None, operation):
            return await call()

    # --- finding and reading ------------------------------------------------------------------

    async def get_message(self, mailbox: str, message_id: str) -> MessageInfo | None:
        """Return id, ``internetMessageId`` and ``isDraft`` of a message, or ``None`` on 404."""
        query = MessageItemRequestBuilder.MessageItemRequestBuilderGetQueryParameters(select=_MESSAGE_FIELDS)
        builder = self._message(mailbox, message_id)
        try:
            found = await self._call(
                mailbox, "get message", lambda: builder.get(RequestConfiguration(query_parameters=query))
            )
        except GraphRejected as exc:
            if exc.status_code == 404:
                return None
            raise
        if found is None or not found.id:
            return None
        return MessageInfo(found.id, found.internet_message_id, bool(found.is_draft))

    async def find_by_correlation(
        self, mailbox: str, correlation_key: str, folder: Literal["SentItems", "Drafts"]
    ) -> MessageInfo | None:
        """Return the first message in ``folder`` tagged with ``correlation_key``, or ``None``.

        ``None`` from Sent Items is not proof that nothing was sent: the copy appears there
        only once transport has picked the mail up. Poll with a deadline, and check Drafts.
        """
        query = FolderMessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=correlation_filter(correlation_key), select=_MESSAGE_FIELDS
        )
        builder = self._graph.users.by_user_id(mailbox).mail_folders.by_mail_folder_id(folder).messages
        request = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        adapter = self._graph.request_adapter

        # Same request, auth and middleware as builder.get(), but the three selected fields are
        # read from the JSON directly: msgraph's Message model costs ~15 ms of CPU per parse
        # (its deserializer table imports ~1,200 modules), and this runs for every backup.
        async def call() -> bytes | None:
            return await adapter.send_primitive_async(request, "bytes", {"XXX": ODataError})

        raw = await self._call(mailbox, f"find in {folder}", call)
        for item in json.loads(raw or b"{}").get("value") or []:
            if item.get("id"):
                return MessageInfo(item["id"], item.get("internetMessageId"), bool(item.get("isDraft")))
        return None

    async def get_mime(self, mailbox: str, message_id: str) -> bytes:
        """Return the raw MIME of a message (``GET .../messages/{id}/$value``)."""
        content = self._message(mailbox, message_id).content
        return await self._call(mailbox, "get MIME", content.get) or b""

    async def delete_message(self, mailbox: str, message_id: str) -> None:
        """Delete a message (moves it to Deleted Items); a message already gone (404) is fine."""
        builder = self._message(mailbox, message_id)
        try:
            await self._call(mailbox, "delete message", builder.delete)
        except GraphRejected as exc:
            if exc.status_code != 404:
                raise
