"""OpenTelemetry traces: publish -> ingest -> scheduler -> worker -> Graph calls -> backup.

Off unless ``MAILPIPE_OTLP_ENDPOINT`` is set (e.g. ``http://otel-collector:4318``); spans then go
to ``{endpoint}/v1/traces`` over OTLP/HTTP, which needs the optional extra ``mailpipe[otlp]``
(``opentelemetry-exporter-otlp-proto-http``). Tests pass their own ``TracerProvider``. No global
provider is set: the provider lives on :class:`Tracing`, one per application.

How the context travels:

* Between processes, in AMQP headers (W3C ``traceparent``): FastStream's
  ``RabbitTelemetryMiddleware`` extracts it when a message is consumed (the handler runs inside
  a ``process`` span) and injects it into everything published while handling it. A publisher
  that sends a ``traceparent`` header therefore sees its trace continue into mailpipe.
* Across the database, where a header cannot go: the scheduler publishes dispatches from a
  background loop, long after (and in another process than) the ingest that stored the email.
  Ingest records its span's ``traceparent`` in the ``received`` row of ``email_events``
  (:func:`trace_detail`); the scheduler reads it back for the emails it claims
  (:meth:`Tracing.received_traceparents`) and publishes each dispatch inside a span that
  continues that trace (:meth:`Tracing.continued`). Retries and backups join the same trace.
  The publisher's payload is never touched. Once ``email_events`` rows are deleted by
  retention, a later dispatch starts a new trace.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from pipeline.db.models import EmailEvent
from pipeline.errors import ConfigError
from pipeline.settings import Settings

__all__ = ["Tracing", "current_trace_id", "current_traceparent", "trace_detail"]

_PROPAGATOR = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None outside a valid span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def current_trace_id() -> str | None:
    """The current trace id as 32 hex digits (what tracing UIs search for), or None."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def trace_detail() -> dict[str, str]:
    """``{"traceparent": ...}`` for an ``email_events`` detail, or ``{}`` when not tracing."""
    traceparent = current_traceparent()
    return {"traceparent": traceparent} if traceparent else {}


def _otlp_provider(endpoint: str, service_name: str) -> TracerProvider:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise ConfigError(
            "MAILPIPE_OTLP_ENDPOINT is set but the OTLP exporter is not installed; "
            "install mailpipe[otlp] (opentelemetry-exporter-otlp-proto-http)"
        ) from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


class Tracing:
    """The tracer provider of one application and the helpers mailpipe's code uses."""

    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("mailpipe")
        self._owned = owned

    @classmethod
    def from_settings(cls, settings: Settings, provider: TracerProvider | None = None) -> Tracing | None:
        """Tracing with ``provider`` if given, OTLP export if configured, else None (off)."""
        if provider is not None:
            return cls(provider, owned=False)
        if settings.otlp_endpoint:
            return cls(_otlp_provider(settings.otlp_endpoint, "mailpipe"), owned=True)
        return None

    def middleware(self) -> RabbitTelemetryMiddleware:
        """FastStream's broker middleware: consume/publish spans and header propagation."""
        return RabbitTelemetryMiddleware(tracer_provider=self.provider)

    @contextlib.contextmanager
    def continued(self, traceparent: str | None, name: str, **attributes: Any) -> Iterator[Span]:
        """A current span continuing ``traceparent`` (a new trace when it is None)."""
        parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            yield span

    async def received_traceparents(
        self, sessions: async_sessionmaker[AsyncSession], email_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, str]:
        """The traceparent ingest recorded for each email that has one."""
        ids = list(dict.fromkeys(email_ids))
        if not ids:
            return {}
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(EmailEvent.incoming_email_id, EmailEvent.detail).where(
                        EmailEvent.event == "received", EmailEvent.incoming_email_id.in_(ids)
                    )
                )
            ).all()
        found: dict[uuid.UUID, str] = {}
        for email_id, detail in rows:
            value = (detail or {}).get("traceparent")
            if email_id is not None and isinstance(value, str):
                found[email_id] = value
        return found

    def shutdown(self) -> None:
        """Flush and stop the exporter of a provider this object created."""
        if self._owned:
            self.provider.shutdown()
