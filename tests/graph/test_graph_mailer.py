"""GraphMailer over the real msgraph-sdk pipeline, with Graph played by an httpx.MockTransport."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import httpx
import pytest
from graph_mocks import MAILBOX, TOKEN, UPLOAD_URL, GraphMock, RecordingLimiter, graph_error

from pipeline.errors import GraphRejected, GraphUnavailable, SendOutcomeUnknown
from pipeline.graph import (
    DEFAULT_THROTTLE_PAUSE_S,
    PROP_ID,
    GraphMailer,
    MailpipeGraphClient,
    MessageTooLarge,
    NoLimiter,
    OutgoingMessage,
    UploadRangeMismatch,
    UploadSessionGone,
    correlation_filter,
)
from pipeline.settings import Settings


def _message(key: str = "email-1", **overrides: object) -> OutgoingMessage:
    return OutgoingMessage(
        from_address=(MAILBOX, None),
        to=[("rcpt@example.test", "Rcpt")],
        subject="Subject",
        body_content="Body",
        correlation_key=key,
        **overrides,  # type: ignore[arg-type]
    )


class TestSendMail:
    async def test_202_returns_and_posts_typed_json(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/users/sender%40contoso.test/sendMail$", httpx.Response(202))

        await mailer.send_mail(MAILBOX, _message())

        request = graph_mock.requests[0]
        assert request.headers["Content-Type"].startswith("application/json")
        body = graph_mock.json_body()
        message = body["Message"]
        assert "SaveToSentItems" not in body  # Graph: only specify it when false
        assert message["internetMessageHeaders"] == [{"name": "x-mailpipe-correlation", "value": "email-1"}]
        assert message["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": "email-1"}]
        assert message["toRecipients"] == [{"emailAddress": {"address": "rcpt@example.test", "name": "Rcpt"}}]

    async def test_202_with_retry_after_is_still_success(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        """Retrying a 202 that carries Retry-After duplicated mail for others; it is accepted."""
        graph_mock.on("POST", "/sendMail$", httpx.Response(202, headers={"Retry-After": "5"}))
        await mailer.send_mail(MAILBOX, _message())
        assert len(graph_mock.requests) == 1

    async def test_any_other_2xx_is_an_unknown_outcome(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/sendMail$", httpx.Response(200))
        with pytest.raises(SendOutcomeUnknown):
            await mailer.send_mail(MAILBOX, _message())

    async def test_504_is_an_unknown_outcome(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/sendMail$", graph_error(504, "UnknownError"))
        with pytest.raises(SendOutcomeUnknown) as caught:
            await mailer.send_mail(MAILBOX, _message())
        assert caught.value.status_code == 504
        assert caught.value.mailbox == MAILBOX

    async def test_invalid_recipients_is_rejected(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/sendMail$", graph_error(400, "ErrorInvalidRecipients", "At least one recipient"))
        with pytest.raises(GraphRejected) as caught:
            await mailer.send_mail(MAILBOX, _message())
        assert caught.value.status_code == 400
        assert caught.value.code == "ErrorInvalidRecipients"
        assert TOKEN not in str(caught.value)

    async def test_read_timeout_is_an_unknown_outcome(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/sendMail$", httpx.ReadTimeout("timed out"))
        with pytest.raises(SendOutcomeUnknown) as caught:
            await mailer.send_mail(MAILBOX, _message())
        assert isinstance(caught.value.__cause__, httpx.ReadTimeout)

    async def test_connection_refused_is_plain_unavailable(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/sendMail$", httpx.ConnectError("refused"))
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.send_mail(MAILBOX, _message())
        assert type(caught.value) is GraphUnavailable

    async def test_a_body_over_4_mib_is_refused_before_any_request(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        big = _message(inline_attachments=[("a.bin", "application/octet-stream", b"\0" * 3_200_000)])
        with pytest.raises(MessageTooLarge):
            await mailer.send_mail(MAILBOX, big)
        assert graph_mock.requests == []


async def test_save_to_sent_items_false_is_sent(
    graph_client: MailpipeGraphClient, graph_mock: GraphMock, settings: Settings
) -> None:
    graph_mock.on("POST", "/sendMail$", httpx.Response(202))
    no_copy = settings.model_copy(update={"graph_save_to_sent_items": False})
    async with httpx.AsyncClient() as upload_http:
        await GraphMailer(graph_client, upload_http, NoLimiter(), no_copy).send_mail(MAILBOX, _message())
    assert graph_mock.json_body()["SaveToSentItems"] is False


class TestThrottling:
    async def test_429_reports_retry_after_to_the_limiter(
        self, mailer: GraphMailer, graph_mock: GraphMock, limiter: RecordingLimiter
    ) -> None:
        graph_mock.on("POST", "/sendMail$", graph_error(429, "ApplicationThrottled", retry_after="2.128"))
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.send_mail(MAILBOX, _message())
        assert type(caught.value) is GraphUnavailable
        assert limiter.throttled == [(MAILBOX, 2.128)]

    async def test_429_without_retry_after_reports_the_default_pause(
        self, mailer: GraphMailer, graph_mock: GraphMock, limiter: RecordingLimiter
    ) -> None:
        graph_mock.on("GET", "/messages/m1$", graph_error(429, "ApplicationThrottled"))
        with pytest.raises(GraphUnavailable):
            await mailer.get_message(MAILBOX, "m1")
        assert limiter.throttled == [(MAILBOX, DEFAULT_THROTTLE_PAUSE_S)]

    async def test_every_call_takes_a_slot_for_its_mailbox(
        self, mailer: GraphMailer, graph_mock: GraphMock, limiter: RecordingLimiter
    ) -> None:
        graph_mock.on("POST", "/messages/d1/send$", httpx.Response(202))
        graph_mock.on("DELETE", "/messages/d1$", httpx.Response(204))
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(201, headers={"Location": "loc"}))

        await mailer.send_draft("a@x.test", "d1")
        await mailer.delete_message("b@x.test", "d1")
        await mailer.upload_chunk(UPLOAD_URL, 0, b"a", 1, mailbox="c@x.test")
        await mailer.upload_chunk(UPLOAD_URL, 0, b"a", 1)  # no mailbox: no slot

        assert limiter.entered == ["a@x.test", "b@x.test", "c@x.test"]
        assert limiter.throttled == []


class TestDrafts:
    async def test_create_draft_returns_id_and_internet_message_id(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        graph_mock.on(
            "POST",
            "/messages$",
            httpx.Response(201, json={"id": "d1", "internetMessageId": "<a@b>", "isDraft": True}),
        )
        draft = await mailer.create_draft(MAILBOX, _message())
        assert (draft.id, draft.internet_message_id) == ("d1", "<a@b>")
        assert graph_mock.json_body()["singleValueExtendedProperties"][0]["value"] == "email-1"

    async def test_send_draft_504_is_unknown_and_sent_once(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/messages/d1/send$", graph_error(504, "GatewayTimeout"), httpx.Response(202))
        with pytest.raises(SendOutcomeUnknown):
            await mailer.send_draft(MAILBOX, "d1")
        assert len(graph_mock.requests) == 1

    async def test_add_attachment(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/messages/d1/attachments$", httpx.Response(201, json={"id": "att1"}))

        attachment_id = await mailer.add_attachment(MAILBOX, "d1", "a.txt", "text/plain", b"hello", is_inline=True)

        assert attachment_id == "att1"
        body = graph_mock.json_body()
        assert body["@odata.type"] == "#microsoft.graph.fileAttachment"
        assert body["contentBytes"] == base64.b64encode(b"hello").decode()
        assert body["isInline"] is True

    async def test_add_attachment_refuses_files_at_the_inline_limit(
        self, mailer: GraphMailer, settings: Settings
    ) -> None:
        with pytest.raises(ValueError, match="inline limit"):
            await mailer.add_attachment(MAILBOX, "d1", "a.bin", "x/y", b"\0" * settings.inline_attachment_limit_bytes)

    async def test_list_attachments_follows_next_link(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        next_link = "https://graph.test/v1.0/users/sender%40contoso.test/messages/d1/attachments?$skiptoken=2"
        graph_mock.on(
            "GET",
            "/messages/d1/attachments$",
            httpx.Response(
                200,
                json={"value": [{"id": "a1", "name": "one", "size": 10}], "@odata.nextLink": next_link},
            ),
            httpx.Response(200, json={"value": [{"id": "a2", "name": "two", "size": 20}]}),
        )

        found = await mailer.list_attachments(MAILBOX, "d1")

        assert [(a.id, a.name, a.size) for a in found] == [("a1", "one", 10), ("a2", "two", 20)]
        assert "skiptoken" in str(graph_mock.requests[1].url)

    async def test_create_upload_session(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on(
            "POST",
            "/messages/d1/attachments/createUploadSession$",
            httpx.Response(201, json={"uploadUrl": UPLOAD_URL, "nextExpectedRanges": ["0-"]}),
        )

        session = await mailer.create_upload_session(MAILBOX, "d1", "big.pdf", 5_000_000, "application/pdf")

        assert (session.upload_url, session.next_offset) == (UPLOAD_URL, 0)
        item = graph_mock.json_body()["AttachmentItem"]
        assert item == {
            "attachmentType": "file",
            "name": "big.pdf",
            "size": 5_000_000,
            "contentType": "application/pdf",
        }


class TestUpload:
    async def test_chunk_headers_and_no_token(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(200, json={"nextExpectedRanges": ["327680"]}))

        progress = await mailer.upload_chunk(UPLOAD_URL, 0, b"x" * 327_680, 1_000_000)

        assert (progress.next_offset, progress.location, progress.done) == (327_680, None, False)
        request = graph_mock.requests[0]
        assert request.headers["Content-Range"] == "bytes 0-327679/1000000"
        assert request.headers["Content-Length"] == "327680"
        assert request.headers["Content-Type"] == "application/octet-stream"
        assert "authorization" not in request.headers
        assert str(request.url) == UPLOAD_URL  # the opaque URL is used as given

    @pytest.mark.parametrize(
        "body",
        [
            {"nextExpectedRanges": ["4"]},
            {"nextExpectedRanges": ["4-"]},
            {"NextExpectedRanges": ["4-7"]},
            {"ExpirationDateTime": "2026-01-01T00:00:00Z", "nextexpectedranges": ["9", "4-"]},
        ],
    )
    async def test_next_expected_ranges_variants(
        self, mailer: GraphMailer, graph_mock: GraphMock, body: object
    ) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(200, json=body))
        progress = await mailer.upload_chunk(UPLOAD_URL, 0, b"abcd", 8)
        assert progress.next_offset == 4

    async def test_last_chunk_returns_the_location(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        location = "https://outlook.test/api/v2.0/Users('u')/Messages('d1')/Attachments('att9')"
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(201, headers={"Location": location}))
        progress = await mailer.upload_chunk(UPLOAD_URL, 4, b"efgh", 8)
        assert (progress.next_offset, progress.location, progress.done) == (None, location, True)

    async def test_416_tells_where_to_resume(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(416, json={"nextExpectedRanges": ["655360"]}))
        with pytest.raises(UploadRangeMismatch) as caught:
            await mailer.upload_chunk(UPLOAD_URL, 983_040, b"x" * 10, 2_000_000)
        assert caught.value.expected_offset == 655_360
        assert "upload-secret" not in str(caught.value)

    @pytest.mark.parametrize("status", [404, 410])
    async def test_expired_session(self, mailer: GraphMailer, graph_mock: GraphMock, status: int) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(status))
        with pytest.raises(UploadSessionGone):
            await mailer.upload_chunk(UPLOAD_URL, 0, b"abcd", 8)

    async def test_chunk_errors_raise_instead_of_being_swallowed(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", graph_error(500, "ErrorInternalServerError"))
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.upload_chunk(UPLOAD_URL, 0, b"abcd", 8)
        assert caught.value.status_code == 500
        assert not isinstance(caught.value, SendOutcomeUnknown)

    async def test_network_error_on_a_chunk(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("PUT", "/AttachmentSessions", httpx.ReadTimeout("slow"))
        with pytest.raises(GraphUnavailable):
            await mailer.upload_chunk(UPLOAD_URL, 0, b"abcd", 8)

    async def test_chunk_must_fit_the_file(self, mailer: GraphMailer) -> None:
        with pytest.raises(ValueError, match="does not fit"):
            await mailer.upload_chunk(UPLOAD_URL, 6, b"abcd", 8)

    async def test_upload_status(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on(
            "GET",
            "/AttachmentSessions",
            httpx.Response(200, json={"nextExpectedRanges": ["655360-"]}),
            httpx.Response(404),
        )
        assert await mailer.upload_status(UPLOAD_URL) == 655_360
        assert await mailer.upload_status(UPLOAD_URL) is None
        assert all("authorization" not in r.headers for r in graph_mock.requests)

    async def test_upload_client_with_authorization_is_refused(self, settings: Settings) -> None:
        async with httpx.AsyncClient(headers={"Authorization": "Bearer x"}) as bad:
            with pytest.raises(ValueError, match="Authorization"):
                GraphMailer(None, bad, NoLimiter(), settings)  # type: ignore[arg-type]


class TestLookups:
    async def test_get_message(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on(
            "GET",
            "/messages/m1$",
            httpx.Response(200, json={"id": "m1", "internetMessageId": "<i>", "isDraft": False}),
        )
        info = await mailer.get_message(MAILBOX, "m1")
        assert info is not None
        assert (info.id, info.internet_message_id, info.is_draft) == ("m1", "<i>", False)
        assert parse_qs(graph_mock.requests[0].url.query.decode())["$select"] == ["id,internetMessageId,isDraft"]

    async def test_get_message_404_is_none(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("GET", "/messages/m1$", graph_error(404, "ErrorItemNotFound"))
        assert await mailer.get_message(MAILBOX, "m1") is None

    async def test_get_message_504_is_plain_unavailable(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("GET", "/messages/m1$", graph_error(504, "GatewayTimeout"))
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.get_message(MAILBOX, "m1")
        assert type(caught.value) is GraphUnavailable

    async def test_get_message_timeout_is_plain_unavailable(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("GET", "/messages/m1$", httpx.ReadTimeout("slow"))
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.get_message(MAILBOX, "m1")
        assert type(caught.value) is GraphUnavailable
        assert caught.value.code == "ReadTimeout"

    async def test_find_by_correlation_escapes_quotes(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on(
            "GET",
            "/mailFolders/SentItems/messages$",
            httpx.Response(200, json={"value": [{"id": "s1", "internetMessageId": "<i>", "isDraft": False}]}),
        )

        info = await mailer.find_by_correlation(MAILBOX, "o'brien's", "SentItems")

        assert info is not None
        assert info.id == "s1"
        query = parse_qs(graph_mock.requests[0].url.query.decode())
        assert query["$filter"] == [
            f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq 'o''brien''s')"
        ]

    async def test_find_by_correlation_nothing_found(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("GET", "/mailFolders/Drafts/messages$", httpx.Response(200, json={"value": []}))
        assert await mailer.find_by_correlation(MAILBOX, "k", "Drafts") is None

    def test_correlation_filter(self) -> None:
        assert correlation_filter("a'b").endswith("ep/value eq 'a''b')")

    async def test_get_mime(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        mime = b"MIME-Version: 1.0\r\nSubject: s\r\n\r\nbody"
        graph_mock.on(
            "GET",
            "/messages/m1/\\$value$",
            httpx.Response(200, content=mime, headers={"Content-Type": "text/plain"}),
        )
        assert await mailer.get_mime(MAILBOX, "m1") == mime

    async def test_delete_message_tolerates_404(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("DELETE", "/messages/m1$", graph_error(404, "ErrorItemNotFound"))
        await mailer.delete_message(MAILBOX, "m1")

    async def test_delete_message_403_is_rejected(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("DELETE", "/messages/m1$", graph_error(403, "ErrorAccessDenied"))
        with pytest.raises(GraphRejected):
            await mailer.delete_message(MAILBOX, "m1")
