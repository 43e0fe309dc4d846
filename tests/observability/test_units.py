"""Metrics, Graph-call observation, the consumer edge and tracing set-up, without services."""

from __future__ import annotations

import importlib.util
import logging
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from pipeline.errors import ConfigError, GraphRejected, GraphUnavailable, InvalidMessage, SendOutcomeUnknown
from pipeline.observability.edge import delivery_scope, observed_settle
from pipeline.observability.graphcalls import GraphCallObserver
from pipeline.observability.logs import QUIET_LOGGERS, configure_logging
from pipeline.observability.metrics import Metrics
from pipeline.observability.tracing import Tracing, current_trace_id, trace_detail
from pipeline.settings import Settings


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.retry("send:attachment", "graph-throttled")
    assert sample(first, "mailpipe_retries_total", step="send:attachment", reason="graph-throttled") == 1
    assert sample(second, "mailpipe_retries_total", step="send:attachment", reason="graph-throttled") is None
    text = first.render().decode()
    for outcome in ("backed-up", "failed", "stale"):
        assert f'mailpipe_backups_total{{outcome="{outcome}"}} 0.0' in text


def test_a_dead_lettered_backup_is_a_failed_backup() -> None:
    metrics = Metrics()
    metrics.dead_letter("backup", "attempts-exhausted:graph-503")
    metrics.dead_letter("send:no-attachment", "graph-rejected")
    metrics.backup("unknown")
    assert sample(metrics, "mailpipe_backups_total", outcome="failed") == 1
    assert sample(metrics, "mailpipe_backups_total", outcome="stale") == 1
    assert sample(metrics, "mailpipe_dead_letters_total", step="backup", reason="attempts-exhausted:graph-503") == 1


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (GraphUnavailable("x", status_code=429), "429"),
        (GraphUnavailable("x", status_code=503), "503"),
        (SendOutcomeUnknown("x", status_code=504), "504"),
        (GraphRejected("x", status_code=403), "403"),
        (GraphUnavailable("x", code="ConnectError"), "error"),
        (SendOutcomeUnknown("x", code="ReadTimeout"), "error"),
    ],
)
def test_graph_answers_are_counted_by_status(error: Exception, status: str) -> None:
    metrics = Metrics()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = GraphCallObserver(metrics, provider.get_tracer("test"))
    with pytest.raises(type(error)), observer.call("sendMail") as call:
        call.slot_acquired()
        raise error
    with observer.call("sendMail"):
        pass
    assert sample(metrics, "mailpipe_graph_responses_total", operation="sendMail", status=status) == 1
    assert sample(metrics, "mailpipe_graph_responses_total", operation="sendMail", status="2xx") == 1
    assert sample(metrics, "mailpipe_limiter_wait_seconds_count") == 1
    failed, ok = exporter.get_finished_spans()
    assert failed.name == ok.name == "graph sendMail"
    assert failed.status.status_code == StatusCode.ERROR
    assert ok.status.status_code == StatusCode.UNSET


def test_an_observer_without_metrics_or_tracer_does_nothing() -> None:
    observer = GraphCallObserver()
    with observer.call("get MIME") as call:
        call.slot_acquired()
    observer.uploaded(10)


class FakeMessage:
    message_id = "m-1"
    correlation_id = "c-1"
    headers: dict[str, Any] = {}

    def __init__(self) -> None:
        self.acked = self.nacked = False

    async def ack(self) -> None:
        self.acked = True

    async def nack(self, *, requeue: bool = True) -> None:
        self.nacked = True


async def test_the_edge_records_outcomes_and_unbinds_its_log_context() -> None:
    metrics = Metrics()
    ctx: Any = SimpleNamespace(metrics=metrics)
    structlog.contextvars.bind_contextvars(outer="kept")
    dead: list[Exception] = []

    async def sent() -> str:
        assert structlog.contextvars.get_contextvars()["correlation_id"] == "c-1"
        return "sent"

    async def invalid() -> None:
        raise InvalidMessage("bad", reason="schema")

    async def record(error: Exception) -> None:
        dead.append(error)

    message: Any = FakeMessage()
    await observed_settle(ctx, "send:attachment", message, sent, record)
    await observed_settle(ctx, "ingest", FakeMessage(), invalid, record)  # type: ignore[arg-type]
    assert message.acked
    assert len(dead) == 1
    assert sample(metrics, "mailpipe_step_outcomes_total", step="send:attachment", outcome="sent", reason="") == 1
    assert sample(metrics, "mailpipe_step_outcomes_total", step="ingest", outcome="dead-lettered", reason="schema") == 1
    assert sample(metrics, "mailpipe_dead_letters_total", step="ingest", reason="schema") == 1
    assert sample(metrics, "mailpipe_step_duration_seconds_count", step="ingest") == 1
    assert structlog.contextvars.get_contextvars() == {"outer": "kept"}
    structlog.contextvars.clear_contextvars()


def test_the_edge_works_without_metrics() -> None:
    with delivery_scope(SimpleNamespace(metrics=None), "backup", FakeMessage()) as delivery:  # type: ignore[arg-type]
        assert delivery.outcome == "done"


def test_tracing_is_off_without_an_endpoint_and_outside_spans() -> None:
    assert Tracing.from_settings(Settings()) is None
    assert current_trace_id() is None
    assert trace_detail() == {}


def test_an_otlp_endpoint_needs_the_optional_exporter() -> None:
    settings = Settings(otlp_endpoint="http://127.0.0.1:4318")
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        installed = False
    if not installed:
        with pytest.raises(ConfigError, match=r"mailpipe\[otlp\]"):
            Tracing.from_settings(settings)
        return
    tracing = Tracing.from_settings(settings)
    assert tracing is not None
    tracing.shutdown()


def test_payload_printing_loggers_stay_quiet_at_debug() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(Settings(log_level="DEBUG", log_format="json"))
        for name, floor in QUIET_LOGGERS.items():
            assert logging.getLogger(name).getEffectiveLevel() >= floor, name
        assert logging.getLogger("pipeline.steps.send").isEnabledFor(logging.DEBUG)
        assert logging.getLogger("faststream").propagate
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        structlog.reset_defaults()
