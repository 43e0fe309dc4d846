"""mailpipe's Prometheus metrics, owned by one :class:`Metrics` object per application.

Each :class:`Metrics` has its own ``CollectorRegistry``; nothing is registered in
``prometheus_client``'s global registry, so two apps in one process (tests) never collide.
The names are an operator contract: the Helm chart's alerts and ``docs/operations.md`` use them.

Two kinds of series:

* **Counters and histograms** are updated by the process that does the work (every role).
* **Gauges sampled from the database and the broker** (queue depth, emails by status, in-flight,
  backlog age, DLQ size) are set by :class:`pipeline.observability.sampler.Sampler`, which runs
  only in the scheduler role, so N worker pods do not all query the database. Aggregate them
  with ``max`` across pods.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.db.types import utcnow

__all__ = ["BACKUP_OUTCOMES", "Metrics"]

#: ``mailpipe_backups_total{outcome}`` values.
BACKUP_OUTCOMES = ("backed-up", "failed", "stale")

# Handling a message ranges from milliseconds (ingest) to minutes (a 150 MB upload).
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
# End to end includes the wait for send_at and retries: up to days.
_E2E_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 7 * 86400)
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every mailpipe metric, registered in :attr:`registry`.

    The methods are the only way the code updates them, so label values stay consistent.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge("mailpipe_queue_depth", "Ready messages in a RabbitMQ queue.", ["queue"], registry=r)
        self.emails = Gauge("mailpipe_emails", "Emails in the database by status.", ["status"], registry=r)
        self.in_flight = Gauge(
            "mailpipe_in_flight", "Emails dispatched and not finished, per pool.", ["pool"], registry=r
        )
        self.in_flight_cap = Gauge(
            "mailpipe_in_flight_cap", "The in-flight cap of a pool (settings).", ["pool"], registry=r
        )
        self.backlog_oldest_age = Gauge(
            "mailpipe_backlog_oldest_age_seconds",
            "How long the oldest due, undispatched email has been due (0 when none is).",
            registry=r,
        )
        self.dlq_size = Gauge("mailpipe_dlq_size", "Dead letters not purged (dlq rows).", registry=r)
        self.dispatched = Counter(
            "mailpipe_dispatched", "Dispatches published by the scheduler.", ["route"], registry=r
        )
        self.step_duration = Histogram(
            "mailpipe_step_duration_seconds",
            "Time to handle one delivery, per step.",
            ["step"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "mailpipe_end_to_end_seconds",
            "Time between two milestones of one email.",
            ["stage"],
            buckets=_E2E_BUCKETS,
            registry=r,
        )
        self.step_outcomes = Counter(
            "mailpipe_step_outcomes",
            "Deliveries handled, by outcome.",
            ["step", "outcome", "reason"],
            registry=r,
        )
        self.graph_responses = Counter(
            "mailpipe_graph_responses",
            "Answers from Microsoft Graph by status (2xx, 429, 503, ...; 'error' = no answer).",
            ["operation", "status"],
            registry=r,
        )
        self.retries = Counter(
            "mailpipe_retries",
            "Work deferred to be tried again (parked or requeued).",
            ["step", "reason"],
            registry=r,
        )
        self.limiter_wait = Histogram(
            "mailpipe_limiter_wait_seconds",
            "Time a Graph call waited for the shared limiter before it was made.",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.upload_bytes = Counter(
            "mailpipe_upload_bytes", "Attachment bytes accepted by Graph upload sessions.", registry=r
        )
        self.backups = Counter("mailpipe_backups", "Backups by outcome.", ["outcome"], registry=r)
        self.dead_letters = Counter(
            "mailpipe_dead_letters", "Messages and emails dead-lettered.", ["step", "reason"], registry=r
        )
        self.heap_released_bytes = Counter(
            "mailpipe_heap_released_bytes",
            "RSS handed back to the OS by malloc_trim (pipeline.memory).",
            registry=r,
        )
        self.heap_trim_duration = Histogram(
            "mailpipe_heap_trim_seconds",
            "Time one malloc_trim call held the event loop.",
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        # Series that alerts divide or compare exist from the start, at zero.
        for outcome in BACKUP_OUTCOMES:
            self.backups.labels(outcome=outcome)

    # --- updates --------------------------------------------------------------------------------

    def step_outcome(self, step: str, outcome: str, reason: str = "") -> None:
        self.step_outcomes.labels(step=step, outcome=outcome, reason=reason).inc()

    def observe_step(self, step: str, seconds: float) -> None:
        self.step_duration.labels(step=step).observe(seconds)

    def stage(self, stage: str, since: datetime, until: datetime | None = None) -> None:
        """Observe the time from ``since`` to ``until`` (default: now) for ``stage``."""
        seconds = ((until or utcnow()) - since).total_seconds()
        self.end_to_end.labels(stage=stage).observe(max(0.0, seconds))

    def dispatches(self, routes: Iterable[str]) -> None:
        for route, n in Tally(routes).items():
            self.dispatched.labels(route=route).inc(n)

    def graph_response(self, operation: str, status: int | str) -> None:
        self.graph_responses.labels(operation=operation, status=str(status)).inc()

    def retry(self, step: str, reason: str) -> None:
        self.retries.labels(step=step, reason=reason).inc()

    def limiter_waited(self, seconds: float) -> None:
        self.limiter_wait.observe(seconds)

    def uploaded(self, n_bytes: int) -> None:
        self.upload_bytes.inc(n_bytes)

    def backup(self, outcome: str) -> None:
        """Count one backup outcome; ``unknown`` (no such email) counts as ``stale``."""
        self.backups.labels(outcome="stale" if outcome == "unknown" else outcome).inc()

    def dead_letter(self, step: str, reason: str) -> None:
        """Count a dead letter; one from the backup step is also a ``failed`` backup."""
        self.dead_letters.labels(step=step, reason=reason).inc()
        if step == "backup":
            self.backups.labels(outcome="failed").inc()

    def heap_trimmed(self, released_bytes: int, seconds: float) -> None:
        self.heap_released_bytes.inc(released_bytes)
        self.heap_trim_duration.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)
