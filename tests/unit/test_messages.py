"""SendEmail validation at the edge: every rejection names what is wrong."""

from __future__ import annotations

import base64
import json

import pytest

from pipeline.errors import InvalidMessage
from pipeline.messages import derive_idempotency_key
from pipeline.steps.ingest import parse_send_email
from tests.support import sample_email


def parse(payload: dict[str, object], max_bytes: int = 100_000) -> None:
    parse_send_email(json.dumps(payload).encode(), max_bytes=max_bytes)


def test_a_valid_email_parses_with_defaults() -> None:
    email, _ = parse_send_email(json.dumps(sample_email(1)).encode(), max_bytes=10_000)
    assert email.priority == 5
    assert email.sender_address == "sender@contoso.example"
    assert not email.has_attachments


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"to": ["not an address"]}, "to.0"),
        ({"subject": "Hello\r\nBcc: evil@example.com"}, "subject: Value error, must not contain CR or LF"),
        ({"to": [], "cc": [], "bcc": []}, "at least one recipient"),
        ({"priority": 11}, "priority"),
        ({"send_at": "2026-01-01T09:00:00"}, "timezone"),
        ({"body": {"contentType": "rtf", "content": "x"}}, "body.contentType"),
        ({"Subject": "typo"}, "Subject: Extra inputs are not permitted"),
        ({"attachments": [{"name": "a.pdf", "size": 10, "urlOrId": "ftp://x/y"}]}, "http:// or https://"),
        ({"attachments": [{"name": "a.pdf", "size": 10}]}, "exactly one of urlOrId and contentBytes"),
        (
            {"attachments": [{"name": "a.txt", "size": 99, "contentBytes": base64.b64encode(b"abc").decode()}]},
            "size says 99 bytes but contentBytes holds 3",
        ),
        ({"to": [f"r{n}@x.example" for n in range(501)]}, "at most 500"),
    ],
)
def test_invalid_input_is_rejected_with_a_reason(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidMessage, match="SendEmail is invalid") as caught:
        parse({**sample_email(1), **change})
    assert message in str(caught.value)


def test_not_json_is_rejected() -> None:
    with pytest.raises(InvalidMessage, match="not JSON") as caught:
        parse_send_email(b"\xff{", max_bytes=100)
    assert caught.value.reason == "not-json"


def test_oversized_message_names_the_limit_setting() -> None:
    with pytest.raises(InvalidMessage, match="MAILPIPE_MAX_MESSAGE_BYTES") as caught:
        parse(sample_email(1), max_bytes=50)
    assert caught.value.reason == "too-large"


def test_derived_key_ignores_key_order_and_whitespace() -> None:
    a = {"b": 1, "a": [1, 2]}
    b = json.loads('{ "a": [1,2], "b": 1 }')
    assert derive_idempotency_key(a) == derive_idempotency_key(b)
    assert derive_idempotency_key(a) != derive_idempotency_key({"a": [2, 1], "b": 1})
