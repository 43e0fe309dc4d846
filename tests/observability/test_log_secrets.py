"""A whole pipeline with JSON logs at DEBUG: no token, key, upload URL or message body in any line."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from pipeline.db.models import IncomingEmail
from pipeline.emulator import EmulatorConfig, serve_in_thread
from pipeline.settings import ROLES
from tests.processes import RoleProcess
from tests.support import Publisher, sample_email, wait_until

TOKEN = "tok-Vq81ZZe3xKp0mNfW"
BODY = "Zebra-Quartz-7741 the secret body of this email"
SUBJECT = "Subject-Okapi-5521"
FILE_BYTES = b"Attachment-Narwhal-9090 " * 10


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_logs_carry_ids_and_no_secret(amqp_url: str, database_url: str, tmp_path: Path) -> None:
    key = os.urandom(32)
    key_b64 = base64.b64encode(key).decode()
    big = 3_100_000  # an upload session: its URL carries a token in the query
    with serve_in_thread(EmulatorConfig(static_token=TOKEN, sent_items_delay_s=0.2, seed=7)) as emulator:
        settings: dict[str, Any] = {
            "amqp_url": amqp_url,
            "database_url": database_url,
            "graph_base_url": emulator.base_url,
            "graph_static_token": TOKEN,
            "encryption_keys": f"logtest:{key_b64}",
            "log_format": "json",
            "log_level": "DEBUG",
            "scheduler_poll_interval_s": 0.2,
            "graph_sent_lookup_interval_s": 0.25,
            "retry_base_delay_s": 0.2,
            "upload_chunk_bytes": 327_680 * 4,
        }
        body = {"contentType": "text", "content": BODY}
        inline = {
            "name": "n.txt",
            "size": len(FILE_BYTES),
            "contentBytes": base64.b64encode(FILE_BYTES).decode(),
        }
        by_url = {"name": "big.bin", "size": big, "urlOrId": f"{emulator.root_url}/_emulator/files/{big}/5"}
        emails = [
            sample_email(1, subject=SUBJECT, body=body),
            sample_email(2, subject=SUBJECT, body=body, attachments=[inline, by_url]),
        ]
        invalid = sample_email(3, subject=SUBJECT, body=body, to=["not an address"])
        log_path = tmp_path / "mailpipe.log"
        process = RoleProcess(list(ROLES), settings, log_path)
        engine = create_async_engine(database_url)
        try:
            async with Publisher(amqp_url) as publisher:
                process.start()
                await publisher.wait_for_consumer("mail.ingest")
                await publisher.publish_many([*emails, invalid])

                async def backed_up() -> bool:
                    async with engine.connect() as conn:
                        done = await conn.scalar(
                            select(func.count()).select_from(IncomingEmail).where(IncomingEmail.status == "backed_up")
                        )
                    return done == len(emails)

                await wait_until(backed_up, timeout_s=90, what="both emails backed up")
        finally:
            process.stop()
            await engine.dispose()
    assert process.process is not None and process.process.returncode == 0

    text = log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the process logged nothing"
    forbidden = {
        "the static token": TOKEN,
        "the encryption key (base64)": key_b64,
        "the encryption key (hex)": key.hex(),
        "the body": BODY,
        "the body's distinctive word": "Zebra-Quartz",
        "the inline file": "Attachment-Narwhal",
        "the inline file (base64)": base64.b64encode(FILE_BYTES).decode()[:24],
        "an upload URL's token": "authtoken",
        "an Authorization header": "Bearer",
        "the subject": SUBJECT,
    }
    leaked = {what: value for what, value in forbidden.items() if value in text}
    assert not leaked, leaked
    handled = [line for line in lines if line.get("event") == "backup handled" and line.get("outcome") == "backed-up"]
    assert handled, "backup lines are logged at DEBUG"
    for line in handled:
        assert {
            "incoming_email_id",
            "publisher_message_id",
            "correlation_id",
            "graph_message_id",
            "step",
        } <= set(line)
