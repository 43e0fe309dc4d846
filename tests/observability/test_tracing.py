"""One email, one trace: the publisher's traceparent is continued through every step to the backup."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from pipeline.app import create_app
from pipeline.context import AppContext
from pipeline.db.engine import create_sessionmaker
from pipeline.db.events import record_event
from pipeline.db.models import EmailEvent, IncomingEmail
from pipeline.observability.tracing import Tracing
from pipeline.settings import Settings
from tests.support import pipeline_settings, sample_email, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PUBLISHER_SPAN = "00f067aa0ba902b7"


@asynccontextmanager
async def traced(settings: Settings, provider: TracerProvider) -> AsyncIterator[AppContext]:
    app, ctx = create_app(settings, tracer_provider=provider)
    async with app:
        yield ctx


async def publish_with_traceparent(amqp_url: str, email: dict[str, Any]) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("mail.commands")
        await exchange.publish(
            aio_pika.Message(
                json.dumps(email).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"traceparent": f"00-{TRACE_ID}-{PUBLISHER_SPAN}-01"},
            ),
            routing_key="send-email",
        )
    finally:
        await connection.close()


def names(spans: list[ReadableSpan]) -> set[str]:
    return {span.name for span in spans}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_one_email_produces_one_connected_trace(amqp_url: str, database_url: str, emulator: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = pipeline_settings(amqp_url, database_url, emulator, http_port=0)
    async with traced(settings, provider) as ctx:
        await publish_with_traceparent(amqp_url, sample_email(1))

        async def backed_up() -> bool:
            async with ctx.sessions() as session:
                status = await session.scalar(select(IncomingEmail.status))
            return status == "backed_up"

        await wait_until(backed_up, timeout_s=60, what="the email backed up")
        async with ctx.sessions() as session:
            detail = await session.scalar(select(EmailEvent.detail).where(EmailEvent.event == "received"))
    provider.shutdown()

    spans = list(exporter.get_finished_spans())
    ours = [s for s in spans if s.context is not None and format(s.context.trace_id, "032x") == TRACE_ID]
    assert detail is not None and TRACE_ID in detail["traceparent"], "ingest recorded its trace context"
    expected = {
        "mail.commands.send-email process",  # ingest
        "dispatch",  # the scheduler's loop, continuing the ingest's trace through the database
        "mail.dispatch.no-attachment process",  # the send worker
        "graph sendMail",
        "mail.dispatch.backup process",  # the backup worker (dispatched by the scheduler too)
        "graph get MIME",
    }
    assert expected <= names(ours), sorted(names(ours))
    # Connected: every span's parent is another span of the trace, or the publisher's span.
    ids = {span.context.span_id for span in ours if span.context is not None}
    for span in ours:
        assert span.parent is not None, span.name
        assert span.parent.span_id in ids or format(span.parent.span_id, "016x") == PUBLISHER_SPAN, span.name

    by_id = {span.context.span_id: span for span in ours if span.context is not None}

    def ancestry(span: ReadableSpan) -> list[str]:
        chain = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            chain.append(span.name)
        return chain

    (send_call,) = [s for s in ours if s.name == "graph sendMail"]
    assert "mail.dispatch.no-attachment process" in ancestry(send_call)
    assert "dispatch" in ancestry(send_call)
    assert "mail.commands.send-email process" in ancestry(send_call)
    (mime_call,) = [s for s in ours if s.name == "graph get MIME"]
    assert "mail.dispatch.backup process" in ancestry(mime_call)
    assert "mail.commands.send-email process" in ancestry(mime_call)


async def test_the_scheduler_finds_the_trace_context_ingest_recorded(database_url: str) -> None:
    engine = create_async_engine(database_url)
    sessions = create_sessionmaker(engine)
    recorded, plain = uuid.uuid4(), uuid.uuid4()
    traceparent = f"00-{TRACE_ID}-{PUBLISHER_SPAN}-01"
    try:
        async with sessions.begin() as session:
            await record_event(
                session, "received", email_id=recorded, publisher_message_id="a", traceparent=traceparent
            )
            await record_event(session, "received", email_id=plain, publisher_message_id="b", route="attachment")
            await record_event(session, "dispatched", email_id=plain, publisher_message_id="b", traceparent="ignored")
        tracing = Tracing(TracerProvider(), owned=False)
        found = await tracing.received_traceparents(sessions, [recorded, plain, uuid.uuid4()])
    finally:
        await engine.dispose()
    assert found == {recorded: traceparent}
