"""The emulator through the real msgraph-sdk code path (kiota request adapter, httpx, middleware).

The client is built as graph-facts §3.6/§4.1 recommend: the SDK's RetryHandler switched off, the
adapter's base URL set explicitly, and a token provider whose allowed hosts keep the bearer
token on Graph calls only — the upload URL is then written with a separate plain httpx client.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.attachment_item import AttachmentItem
from msgraph.generated.models.attachment_type import AttachmentType
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.internet_message_header import InternetMessageHeader
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.models.single_value_legacy_extended_property import SingleValueLegacyExtendedProperty
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
    CreateUploadSessionPostRequestBody,
)
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
from msgraph_core import GraphClientFactory

from pipeline.emulator import RunningEmulator, expected_file_sha256

MAILBOX = "sdk.user@contoso.test"
PROP_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name MailpipeCorrelation"
CHUNK = 10 * 320 * 1024
FILE_SIZE = 4 * 1024 * 1024


class StaticTokenProvider(AccessTokenProvider):
    """Hands out the emulator's static token, and only to allowed hosts."""

    def __init__(self, token: str, hosts: list[str]) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator(hosts)

    async def get_authorization_token(self, uri: str, additional_authentication_context: Any = None) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


@pytest.fixture
async def sdk(emu: RunningEmulator) -> AsyncIterator[GraphServiceClient]:
    """A GraphServiceClient against the emulator, with its connections closed afterwards.

    msgraph-core 1.5.2 wraps the client's transport in an ``AsyncGraphTransport`` that has no
    ``aclose``, so ``AsyncClient.aclose()`` leaks the pooled sockets; keep the real transport and
    close it ourselves.
    """
    auth = BaseBearerTokenAuthenticationProvider(StaticTokenProvider("emulator-token", ["127.0.0.1"]))
    transport = httpx.AsyncHTTPTransport()
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(transport=transport, timeout=30),
        options={RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False)},
    )
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = emu.base_url
    try:
        yield GraphServiceClient(request_adapter=adapter)
    finally:
        await http.aclose()
        await transport.aclose()


def _message(correlation: str) -> Message:
    return Message(
        subject=f"SDK {correlation}",
        body=ItemBody(content_type=BodyType.Text, content="sent through msgraph-sdk"),
        to_recipients=[Recipient(email_address=EmailAddress(address="rcpt@example.test"))],
        internet_message_headers=[InternetMessageHeader(name="x-mailpipe-correlation", value=correlation)],
        single_value_extended_properties=[SingleValueLegacyExtendedProperty(id=PROP_ID, value=correlation)],
    )


async def test_sdk_send_mail_and_draft_flow(sdk: GraphServiceClient, emu: RunningEmulator, plain) -> None:
    """sendMail, draft, small + session attachments, send, Sent Items look-up and $value via the SDK."""
    user = sdk.users.by_user_id(MAILBOX)

    assert await user.send_mail.post(SendMailPostRequestBody(message=_message("sdk-1"))) is None

    draft = await user.messages.post(_message("sdk-2"))
    assert draft is not None and draft.id and draft.is_draft is True and draft.internet_message_id
    item = user.messages.by_message_id(draft.id)
    small = await item.attachments.post(FileAttachment(name="small.txt", content_bytes=b"tiny"))
    assert small is not None and small.size == 4

    session = await item.attachments.create_upload_session.post(
        CreateUploadSessionPostRequestBody(
            attachment_item=AttachmentItem(attachment_type=AttachmentType.File, name="big.bin", size=FILE_SIZE)
        )
    )
    assert session is not None and session.upload_url and session.next_expected_ranges == ["0-"]
    data = (await plain.get(f"/_emulator/files/{FILE_SIZE}/sdk")).content
    for start in range(0, FILE_SIZE, CHUNK):
        end = min(start + CHUNK, FILE_SIZE) - 1
        put = await plain.put(
            session.upload_url,
            content=data[start : end + 1],
            headers={"Content-Range": f"bytes {start}-{end}/{FILE_SIZE}"},
        )
        assert put.status_code in (200, 201), put.text

    await item.send.post()

    query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
        filter=f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq 'sdk-2')",
        select=["id", "internetMessageId", "isDraft"],
    )
    found = await user.mail_folders.by_mail_folder_id("SentItems").messages.get(
        RequestConfiguration(query_parameters=query)
    )
    assert found is not None and found.value is not None and len(found.value) == 1
    copy = found.value[0]
    assert copy.id != draft.id and copy.internet_message_id == draft.internet_message_id
    assert copy.is_draft is False

    raw = await user.messages.by_message_id(str(copy.id)).content.get()
    assert raw is not None
    parts = {
        p.get_filename(): p.get_payload(decode=True)
        for p in message_from_bytes(raw, policy=policy.default).iter_attachments()
    }
    assert parts["small.txt"] == b"tiny"
    assert hashlib.sha256(parts["big.bin"]).hexdigest() == expected_file_sha256(FILE_SIZE, "sdk")
    assert emu.emulator.stats()["sends_by_correlation"] == {"sdk-1": 1, "sdk-2": 1}


async def test_sdk_surfaces_graph_errors_without_retrying(sdk: GraphServiceClient, emu: RunningEmulator) -> None:
    """With the RetryHandler off, an injected 503 reaches the caller once as ODataError."""
    emu.emulator.update_config({"fail_503_rate": 1.0})
    user = sdk.users.by_user_id(MAILBOX)
    with pytest.raises(ODataError) as caught:
        await user.send_mail.post(SendMailPostRequestBody(message=_message("sdk-503")))
    assert caught.value.response_status_code == 503
    assert caught.value.error is not None and caught.value.error.code == "ErrorServerBusy"
    assert emu.emulator.stats()["mailboxes"][MAILBOX]["requests"] == 1
    assert emu.emulator.stats()["sent"] == []
