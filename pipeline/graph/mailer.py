"""Every Graph mail operation mailpipe performs, one method each, exactly one request each.

:class:`GraphMailer` is the one object the steps use: the sends and look-ups here, the draft
and attachment calls of :class:`~pipeline.graph.drafts.DraftCalls`, and the plumbing of
:class:`~pipeline.graph.calls.GraphCalls` (never retries, waits for the limiter, translates
errors). The send methods (:meth:`GraphMailer.send_mail`, :meth:`GraphMailer.send_draft`)
raise :class:`~pipeline.errors.SendOutcomeUnknown` whenever the mail may have gone out anyway;
the caller must then look for it (:meth:`GraphMailer.find_by_correlation`) before sending again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from pipeline.errors import GraphRejected
from pipeline.graph._sdk import FolderMessagesRequestBuilder, MessageItemRequestBuilder
from pipeline.graph.client import StreamingAdapter
from pipeline.graph.drafts import AttachmentInfo, DraftCalls, DraftRef
from pipeline.graph.errors import error_from_response
from pipeline.graph.message import PROP_ID, OutgoingMessage, send_mail_json

__all__ = ["AttachmentInfo", "DraftRef", "GraphMailer", "MessageInfo", "correlation_filter"]

_MESSAGE_FIELDS = ["id", "internetMessageId", "isDraft"]


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


class GraphMailer(DraftCalls):
    """Mail operations on Graph for any mailbox the app may use; construct it as :class:`GraphCalls`."""

    # --- sending ----------------------------------------------------------------------------

    async def send_mail(self, mailbox: str, message: OutgoingMessage) -> None:
        """Send ``message`` from ``mailbox`` in one ``POST /users/{mailbox}/sendMail`` (JSON).

        Returns when Graph answered 202, which means queued, not delivered.
        ``settings.graph_save_to_sent_items`` decides whether a Sent Items copy is kept; without
        one a lost answer can never be resolved. Raises :class:`~pipeline.graph.errors.MessageTooLarge`
        before any request if the body would reach 4 MB, ``GraphRejected`` for a refusal,
        ``SendOutcomeUnknown`` if the mail may have been sent, ``GraphUnavailable`` if it was not.
        """
        body = send_mail_json(message, save_to_sent_items=self._settings.graph_save_to_sent_items)
        builder = self._graph.users.by_user_id(mailbox).send_mail
        adapter = self._graph.request_adapter

        # What builder.post(SendMailPostRequestBody(...)) does, with the body already written
        # (see pipeline.graph.message: the model costs more CPU than the rest of the send).
        async def post(config: RequestConfiguration[Any]) -> None:
            request = RequestInformation(Method.POST, builder.url_template, builder.path_parameters)
            request.configure(config)
            request.headers.try_add("Accept", "application/json")
            request.set_stream_content(body, "application/json")
            await adapter.send_no_response_content_async(request, {"XXX": ODataError})

        await self._send(mailbox, "sendMail", post)

    async def send_draft(self, mailbox: str, draft_id: str) -> None:
        """Send the draft ``draft_id`` (``POST .../messages/{id}/send``); 202 -> return.

        Afterwards the draft id is no longer valid; the Sent Items copy has a new id. Failure
        modes are those of :meth:`send_mail`.
        """
        send = self._message(mailbox, draft_id).send
        await self._send(mailbox, "send draft", send.post)

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

    async def copy_mime(self, mailbox: str, message_id: str, write: Callable[[bytes], object]) -> int:
        """Hand the raw MIME of a message (``GET .../messages/{id}/$value``) to ``write`` in
        pieces as it arrives; return its size in bytes.

        Memory stays at about one piece whatever the message's size. When this raises,
        ``write`` may have had part of the message: the caller must discard it.
        """
        adapter = self._graph.request_adapter
        if not isinstance(adapter, StreamingAdapter):
            raise TypeError("copy_mime needs a client from pipeline.graph.build_graph_client")
        request = self._message(mailbox, message_id).content.to_get_request_information()
        operation = "get MIME"

        async def call() -> int:
            async with adapter.stream(request) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response, mailbox=mailbox, operation=operation)
                size = 0
                async for piece in response.aiter_bytes():
                    write(piece)
                    size += len(piece)
                return size

        return await self._call(mailbox, operation, call)

    async def get_mime(self, mailbox: str, message_id: str) -> bytes:
        """Return the raw MIME of a message whole (:meth:`copy_mime` for one of any size)."""
        pieces: list[bytes] = []
        await self.copy_mime(mailbox, message_id, pieces.append)
        return b"".join(pieces)

    async def delete_message(self, mailbox: str, message_id: str) -> None:
        """Delete a message (moves it to Deleted Items); a message already gone (404) is fine."""
        builder = self._message(mailbox, message_id)
        try:
            await self._call(mailbox, "delete message", builder.delete)
        except GraphRejected as exc:
            if exc.status_code != 404:
                raise
