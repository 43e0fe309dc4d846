"""The Sent Items look-up before re-sending an email whose send outcome is unknown.

A scripted mailer stands in for Graph: these tests pin the polling rule itself. The whole path
(real msgraph-sdk, the emulator answering 503s during look-ups) runs in
``tests/integration/test_send_path.py``.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.errors import GraphRejected, GraphUnavailable
from pipeline.graph import MessageInfo
from pipeline.settings import Settings
from pipeline.steps.send import MAX_LOOKUP_FAILURES_IN_A_ROW, find_sent_copy

COPY = MessageInfo(id="AAMk-sent", internet_message_id="<m@contoso.example>", is_draft=False)
BUSY = GraphUnavailable("busy", status_code=503)


class ScriptedMailer:
    """Answers each Sent Items look-up with the next scripted result (an error is raised)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def find_by_correlation(self, mailbox: str, key: str, folder: str) -> MessageInfo | None:
        assert folder == "SentItems"
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


def _ctx(deadline_s: float, interval_s: float = 0.01) -> Any:
    settings = Settings(graph_sent_lookup_deadline_s=deadline_s, graph_sent_lookup_interval_s=interval_s)
    return SimpleNamespace(settings=settings)


EMAIL: Any = SimpleNamespace(id=uuid.uuid4(), mailbox="a@contoso.example", correlation_key="k1")


async def test_a_failed_poll_after_a_clean_answer_does_not_end_the_search() -> None:
    mailer = ScriptedMailer(None, BUSY, BUSY, COPY)
    assert await find_sent_copy(_ctx(5.0), mailer, EMAIL) == COPY  # type: ignore[arg-type]
    assert mailer.calls == 4


async def test_not_sent_is_concluded_from_a_clean_answer_after_the_deadline() -> None:
    mailer = ScriptedMailer(None, BUSY, *([None] * 1000))
    assert await find_sent_copy(_ctx(0.1), mailer, EMAIL) is None  # type: ignore[arg-type]
    assert mailer.calls > 3


async def test_a_failing_first_poll_ends_the_search_so_a_down_graph_is_not_polled() -> None:
    mailer = ScriptedMailer(BUSY, COPY)
    with pytest.raises(GraphUnavailable):
        await find_sent_copy(_ctx(5.0), mailer, EMAIL)  # type: ignore[arg-type]
    assert mailer.calls == 1


async def test_failures_in_a_row_end_the_search() -> None:
    mailer = ScriptedMailer(None, *([BUSY] * MAX_LOOKUP_FAILURES_IN_A_ROW), COPY)
    with pytest.raises(GraphUnavailable):
        await find_sent_copy(_ctx(5.0), mailer, EMAIL)  # type: ignore[arg-type]
    assert mailer.calls == 1 + MAX_LOOKUP_FAILURES_IN_A_ROW


async def test_a_failure_with_no_time_left_for_another_poll_is_raised() -> None:
    mailer = ScriptedMailer(None, BUSY, COPY)
    with pytest.raises(GraphUnavailable):
        await find_sent_copy(_ctx(0.05, interval_s=0.1), mailer, EMAIL)  # type: ignore[arg-type]


async def test_a_429_ends_the_search_at_once_so_its_retry_after_is_obeyed_by_parking() -> None:
    throttled = GraphUnavailable("throttled", status_code=429, retry_after_s=0.5)
    mailer = ScriptedMailer(None, throttled, COPY)
    with pytest.raises(GraphUnavailable) as raised:
        await find_sent_copy(_ctx(5.0), mailer, EMAIL)  # type: ignore[arg-type]
    assert raised.value.retry_after_s == 0.5
    assert mailer.calls == 2


async def test_a_permanent_refusal_ends_the_search_at_once() -> None:
    mailer = ScriptedMailer(None, GraphRejected("Mail.Read not granted", status_code=403))
    with pytest.raises(GraphRejected):
        await find_sent_copy(_ctx(5.0), mailer, EMAIL)  # type: ignore[arg-type]
    assert mailer.calls == 2
