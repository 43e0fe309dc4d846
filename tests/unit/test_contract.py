"""The committed contract files are exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.contract import render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_match_the_message_models() -> None:
    generated = render()
    committed = {p.name: p.read_text() for p in SCHEMAS.iterdir() if p.is_file()}
    assert committed == generated, "run `mailpipe schemas export` and commit schemas/"


def test_send_email_schema_uses_the_publisher_field_names() -> None:
    schema = json.loads(render()["SendEmail.schema.json"])
    assert {
        "publisher_message_id",
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "body",
        "attachments",
        "metadata",
        "priority",
        "send_at",
    } <= set(schema["properties"])
    attachment = schema["$defs"]["Attachment"]["properties"]
    assert {"name", "size", "contentType", "urlOrId", "contentBytes"} <= set(attachment)
