"""The metrics a small pipeline run produces, read the way Prometheus reads them: over HTTP."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from pipeline.db.models import IncomingEmail
from tests.support import Publisher, pipeline_settings, running, sample_email, wait_until

NAMES = {
    "mailpipe_queue_depth",
    "mailpipe_emails",
    "mailpipe_in_flight",
    "mailpipe_in_flight_cap",
    "mailpipe_backlog_oldest_age_seconds",
    "mailpipe_dlq_size",
    "mailpipe_dispatched_total",
    "mailpipe_step_duration_seconds",
    "mailpipe_end_to_end_seconds",
    "mailpipe_step_outcomes_total",
    "mailpipe_graph_responses_total",
    "mailpipe_limiter_wait_seconds",
    "mailpipe_upload_bytes_total",
    "mailpipe_backups_total",
    "mailpipe_dead_letters_total",
    "mailpipe_retries_total",
    "mailpipe_heap_released_bytes_total",
    "mailpipe_heap_trim_seconds",
}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_small_run_shows_up_in_metrics(amqp_url: str, database_url: str, emulator: Any) -> None:
    settings = pipeline_settings(
        amqp_url, database_url, emulator, upload_chunk_bytes=327_680, memory_trim_interval_s=0.5
    )
    big = 3_100_000
    inline = {"name": "a.txt", "size": 5, "contentBytes": base64.b64encode(b"hello").decode()}
    by_url = {"name": "big.bin", "size": big, "urlOrId": f"{emulator.root_url}/_emulator/files/{big}/3"}
    emails = [sample_email(1), sample_email(2, attachments=[inline]), sample_email(3, attachments=[by_url])]
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        assert ctx.http_server is not None
        url = f"http://127.0.0.1:{ctx.http_server.port}"
        await publisher.publish_many([*emails, b"not json"])

        async def all_backed_up() -> bool:
            async with ctx.sessions() as session:
                done = await session.scalar(select(func.count()).where(IncomingEmail.status == "backed_up"))
            return done == len(emails)

        await wait_until(all_backed_up, timeout_s=90, what="every email backed up")
        async with httpx.AsyncClient(base_url=url) as http:

            async def sampled() -> bool:
                found = samples((await http.get("/metrics")).text)
                return value(found, "mailpipe_emails", status="backed_up") == len(emails)

            await wait_until(sampled, timeout_s=20, what="the sampler's round after the run")
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    missing = [name for name in NAMES if name not in text]
    assert not missing, missing
    found = samples(text)
    assert value(found, "mailpipe_dispatched_total", route="no-attachment") == 1
    assert value(found, "mailpipe_dispatched_total", route="attachment") == 2
    assert value(found, "mailpipe_backups_total", outcome="backed-up") == 3
    assert value(found, "mailpipe_upload_bytes_total") == big
    assert value(found, "mailpipe_step_outcomes_total", step="send:no-attachment", outcome="sent", reason="") == 1
    assert value(found, "mailpipe_step_outcomes_total", step="ingest", outcome="stored", reason="") == 3
    assert value(found, "mailpipe_step_outcomes_total", step="ingest", outcome="dead-lettered", reason="not-json") == 1
    assert value(found, "mailpipe_dead_letters_total", step="ingest", reason="not-json") == 1
    assert value(found, "mailpipe_dlq_size") == 1
    assert value(found, "mailpipe_graph_responses_total", operation="sendMail", status="2xx") == 1
    assert value(found, "mailpipe_end_to_end_seconds_count", stage="received_to_sent") == 3
    assert value(found, "mailpipe_end_to_end_seconds_count", stage="sent_to_backed_up") == 3
    assert value(found, "mailpipe_in_flight_cap", pool="attachment") == settings.max_in_flight_attachments
    assert value(found, "mailpipe_queue_depth", queue="mail.ingest") == 0
    assert value(found, "mailpipe_heap_trim_seconds_count") >= 1  # the run took longer than 0.5 s
    # FastStream's own series share the registry.
    assert "faststream_received_messages_total" in text
