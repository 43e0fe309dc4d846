"""OutgoingMessage validation and the JSON msgraph-sdk builds from it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kiota_serialization_json.json_serialization_writer import JsonSerializationWriter
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody

from pipeline.errors import GraphRejected
from pipeline.graph.errors import MessageTooLarge
from pipeline.graph.message import (
    CORRELATION_HEADER,
    PROP_ID,
    MailAddress,
    OutgoingMessage,
    check_request_size,
    send_mail_json,
    to_graph_message,
)


def _message(**overrides: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "from_address": ("sender@contoso.test", "Sender"),
        "to": [("a@example.test", None)],
        "subject": "Hello",
        "body_content": "<p>Hi</p>",
        "body_type": "html",
        "correlation_key": "email-42",
    }
    fields.update(overrides)
    return OutgoingMessage(**fields)


def _json(message: OutgoingMessage) -> dict[str, Any]:
    writer = JsonSerializationWriter()
    writer.write_object_value(None, to_graph_message(message))
    result: dict[str, Any] = json.loads(writer.get_serialized_content())
    return result


class TestJsonShape:
    def test_correlation_key_as_header_and_extended_property(self) -> None:
        body = _json(_message())

        assert body["internetMessageHeaders"] == [{"name": CORRELATION_HEADER, "value": "email-42"}]
        assert body["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": "email-42"}]

    def test_sender_recipients_and_body(self) -> None:
        body = _json(_message(cc=[("c@example.test", "C")], bcc=[("b@example.test", None)]))

        assert body["from"] == {"emailAddress": {"address": "sender@contoso.test", "name": "Sender"}}
        assert body["toRecipients"] == [{"emailAddress": {"address": "a@example.test"}}]
        assert body["ccRecipients"] == [{"emailAddress": {"address": "c@example.test", "name": "C"}}]
        assert body["bccRecipients"] == [{"emailAddress": {"address": "b@example.test"}}]
        assert body["body"] == {"contentType": "html", "content": "<p>Hi</p>"}
        assert body["subject"] == "Hello"

    def test_empty_lists_are_left_out(self) -> None:
        body = _json(_message())
        assert "ccRecipients" not in body
        assert "bccRecipients" not in body
        assert "attachments" not in body

    def test_extra_headers_follow_the_correlation_header(self) -> None:
        body = _json(_message(extra_headers=[("X-Campaign", "spring")]))
        assert [h["name"] for h in body["internetMessageHeaders"]] == [CORRELATION_HEADER, "X-Campaign"]

    def test_inline_attachments_are_base64_file_attachments(self) -> None:
        body = _json(_message(inline_attachments=[("a.txt", "text/plain", b"hello")]))
        assert body["attachments"] == [
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt",
                "contentType": "text/plain",
                "isInline": False,
                "contentBytes": base64.b64encode(b"hello").decode(),
            }
        ]


class TestValidation:
    def test_lists_become_named_tuples(self) -> None:
        message = _message()
        assert message.to == (MailAddress("a@example.test", None),)
        assert isinstance(message.from_address, MailAddress)
        assert message.from_address == ("sender@contoso.test", "Sender")

    @pytest.mark.parametrize("name", ["Reply-To", "In-Reply-To", "x-mailpipe-correlation"])
    def test_header_names_must_start_with_x(self, name: str) -> None:
        with pytest.raises(GraphRejected) as caught:
            _message(extra_headers=[(name, "v")])
        assert caught.value.code == "InvalidInternetMessageHeader"

    def test_at_most_five_headers_in_total(self) -> None:
        _message(extra_headers=[(f"x-h{i}", "v") for i in range(4)])
        with pytest.raises(GraphRejected) as caught:
            _message(extra_headers=[(f"x-h{i}", "v") for i in range(5)])
        assert caught.value.code == "InvalidInternetMessageHeaderCollection"

    @pytest.mark.parametrize("key", ["", "a\r\nBcc: x@y"])
    def test_correlation_key_must_be_a_single_line_value(self, key: str) -> None:
        with pytest.raises(GraphRejected):
            _message(correlation_key=key)

    def test_body_type_is_checked(self) -> None:
        with pytest.raises(GraphRejected):
            _message(body_type="markdown")


def test_request_size_limit() -> None:
    small = to_graph_message(_message())
    assert check_request_size(small, what="sendMail") < 2000

    # The largest file sent inline (just under 3,000,000 bytes) still fits in one request ...
    largest_inline = to_graph_message(
        _message(inline_attachments=[("a.bin", "application/octet-stream", b"x" * 2_999_999)])
    )
    assert check_request_size(largest_inline, what="sendMail") < 4 * 1024 * 1024
    # ... and one over 4 MiB of JSON is refused before it is sent.
    big = to_graph_message(_message(inline_attachments=[("big.bin", "application/octet-stream", b"x" * 3_200_000)]))
    with pytest.raises(MessageTooLarge) as caught:
        check_request_size(big, what="sendMail")
    assert caught.value.reason == "message-too-large"
    assert isinstance(caught.value, GraphRejected)


_SHAPES: dict[str, dict[str, Any]] = {
    "minimal": {},
    "text body, no display names": {"body_type": "text", "from_address": ("s@contoso.test", None)},
    "every recipient list": {
        "to": [("a@example.test", "A"), ("b@example.test", None)],
        "cc": [("c@example.test", "C, Jr.")],
        "bcc": [("d@example.test", None), ("e@example.test", "E")],
    },
    "non-ASCII, quotes, backslashes": {
        "subject": 'Grüße "quoted" \\ \u2603 \U0001f600',
        "body_content": "<p>naïve</p>\t\u0000",
        "to": [("a@example.test", 'Zoë "Z"')],
    },
    "empty subject and body": {"subject": "", "body_content": ""},
    "extra headers": {"extra_headers": [("x-one", "1"), ("X-Two", "two words")]},
    "inline files": {
        "inline_attachments": [("a.txt", "text/plain", b"\x00\xffhi"), ("b.pdf", "application/pdf", b"")],
    },
}


@pytest.mark.parametrize("save_to_sent_items", [True, False])
@pytest.mark.parametrize("shape", sorted(_SHAPES))
def test_send_mail_json_is_what_kiota_writes_for_the_model(shape: str, *, save_to_sent_items: bool) -> None:
    message = _message(**_SHAPES[shape])
    model = SendMailPostRequestBody(
        message=to_graph_message(message), save_to_sent_items=None if save_to_sent_items else False
    )
    writer = JsonSerializationWriter()
    writer.write_object_value(None, model)

    assert send_mail_json(message, save_to_sent_items=save_to_sent_items) == writer.get_serialized_content()


def test_send_mail_json_refuses_a_body_graph_would_refuse() -> None:
    fits = _message(inline_attachments=[("a.bin", "application/octet-stream", b"x" * 2_999_999)])
    assert len(send_mail_json(fits, save_to_sent_items=True)) < 4 * 1024 * 1024

    big = _message(inline_attachments=[("big.bin", "application/octet-stream", b"x" * 3_200_000)])
    with pytest.raises(MessageTooLarge):
        send_mail_json(big, save_to_sent_items=True)
