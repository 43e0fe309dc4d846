"""What :class:`~pipeline.graph.mailer.GraphMailer` reports about each Graph call.

One :meth:`GraphCallObserver.call` block wraps one request, limiter wait included:

* a client span ``graph <operation>`` (child of the message being handled), when tracing is on;
* ``mailpipe_limiter_wait_seconds``: from entering the block to :meth:`GraphCall.slot_acquired`;
* ``mailpipe_graph_responses_total{operation,status}``: ``2xx`` when the block ends normally,
  the HTTP status of a Graph error (429, 503 and 504 each their own), ``error`` when no answer
  came (connection refused, timeout, reset).

Operation names are the mailer's fixed strings ("sendMail", "get MIME", ...), never URLs, so
the label set stays small and no upload URL (which carries a token) reaches a metric or span.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from pipeline.errors import GraphRejected, GraphUnavailable
from pipeline.observability.metrics import Metrics

__all__ = ["GraphCall", "GraphCallObserver"]


class GraphCall:
    """One call in progress; tell it when the limiter let the call through."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics
        self._started = time.perf_counter()

    def slot_acquired(self) -> None:
        if self._metrics is not None:
            self._metrics.limiter_waited(time.perf_counter() - self._started)


def _status(exc: Exception) -> str:
    if isinstance(exc, GraphUnavailable | GraphRejected) and exc.status_code is not None:
        return str(exc.status_code)
    return "error"


class GraphCallObserver:
    """Metrics and spans for Graph calls; with neither configured every method does nothing."""

    def __init__(self, metrics: Metrics | None = None, tracer: Tracer | None = None) -> None:
        self._metrics = metrics
        self._tracer = tracer

    @contextlib.contextmanager
    def call(self, operation: str) -> Iterator[GraphCall]:
        span_cm = (
            self._tracer.start_as_current_span(
                f"graph {operation}",
                kind=SpanKind.CLIENT,
                record_exception=False,
                set_status_on_exception=False,
            )
            if self._tracer is not None
            else contextlib.nullcontext()
        )
        with span_cm as span:
            try:
                yield GraphCall(self._metrics)
            except Exception as exc:
                status = _status(exc)
                self._count(operation, status)
                if span is not None:
                    span.set_attribute("http.response.status_code", status)
                    # The error's class and status only: its message may name a mailbox.
                    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise
            self._count(operation, "2xx")

    def uploaded(self, n_bytes: int) -> None:
        if self._metrics is not None:
            self._metrics.uploaded(n_bytes)

    def _count(self, operation: str, status: str) -> None:
        if self._metrics is not None:
            self._metrics.graph_response(operation, status)
