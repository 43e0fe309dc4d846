"""Attach metrics and tracing to a broker; called once per app by :func:`pipeline.app.build_context`."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from opentelemetry.sdk.trace import TracerProvider

from pipeline.observability.metrics import Metrics
from pipeline.observability.tracing import Tracing
from pipeline.settings import Settings

__all__ = ["instrument_broker"]


def instrument_broker(
    settings: Settings, broker: RabbitBroker, tracer_provider: TracerProvider | None = None
) -> tuple[Metrics, Tracing | None]:
    """Create the app's :class:`Metrics` and (if configured) :class:`Tracing`, and add
    FastStream's middlewares to ``broker`` before any subscriber exists.

    The telemetry middleware goes first (outermost) so the consume span is current while the
    Prometheus middleware and the handler run. FastStream's own series (``faststream_*``:
    received, processed by ack status, published, durations) land in the same registry as
    mailpipe's, so ``/metrics`` serves both.
    """
    metrics = Metrics()
    tracing = Tracing.from_settings(settings, tracer_provider)
    if tracing is not None:
        broker.add_middleware(tracing.middleware())
    broker.add_middleware(RabbitPrometheusMiddleware(registry=metrics.registry, app_name="mailpipe"))
    return metrics, tracing
