"""The one rule that turns an error into ack, park or dead-letter."""

from __future__ import annotations

import random

from pipeline.errors import GraphRejected, GraphUnavailable, SendOutcomeUnknown
from pipeline.outcome import Action, decide
from pipeline.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=60.0)


def test_permanent_errors_dead_letter_on_the_first_attempt() -> None:
    decision = decide(GraphRejected("bad recipient", status_code=400), attempt=1, policy=POLICY)
    assert decision.action == Action.DEAD_LETTER
    assert decision.reason == "graph-rejected"


def test_transient_errors_park_until_attempts_run_out() -> None:
    error = GraphUnavailable("busy", status_code=503)
    assert decide(error, attempt=1, policy=POLICY).action == Action.PARK
    assert decide(error, attempt=2, policy=POLICY).action == Action.PARK
    final = decide(error, attempt=3, policy=POLICY)
    assert final.action == Action.DEAD_LETTER
    assert final.reason == "attempts-exhausted:graph-503"


def test_retry_after_is_obeyed_exactly_even_when_fractional() -> None:
    error = GraphUnavailable("throttled", status_code=429, retry_after_s=2.128)
    decision = decide(error, attempt=1, policy=POLICY)
    assert decision.delay_s == 2.128
    assert decision.reason == "graph-throttled"


def test_backoff_is_full_jitter_below_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay_s(4, rng=rng) for _ in range(2000)]
    assert max(delays) <= 8.0
    assert min(delays) >= 0.0
    assert 3.0 < sum(delays) / len(delays) < 5.0  # uniform on [0, 8] averages 4


def test_unknown_send_outcome_is_retried_not_dead_lettered() -> None:
    assert decide(SendOutcomeUnknown("504", status_code=504), attempt=1, policy=POLICY).action == Action.PARK
