"""Test doubles for the Graph client tests: a routed ``MockTransport`` handler and a limiter."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

GRAPH_BASE = "https://graph.test/v1.0"
UPLOAD_URL = "https://outlook.test/api/v2.0/Users('u')/AttachmentSessions('s1')?authtoken=upload-secret"
TOKEN = "graph-secret-token"
MAILBOX = "sender@contoso.test"

Responder = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def graph_error(status: int, code: str, message: str = "", *, retry_after: str | None = None) -> httpx.Response:
    """A Graph-style error answer ``{"error": {"code", "message"}}``, optionally with ``Retry-After``."""
    body = {"error": {"code": code, "message": message or code, "innerError": {"request-id": "r"}}}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class GraphMock:
    """Answers requests from registered routes; unmatched requests get a 599 so tests notice."""

    requests: list[httpx.Request] = field(default_factory=list)
    routes: list[tuple[str, re.Pattern[str], list[Responder]]] = field(default_factory=list)

    def on(self, method: str, path_regex: str, *answers: Responder) -> None:
        """Answer ``method`` on a raw (still percent-encoded) URL path matching ``path_regex``.

        ``answers`` are used in turn; the last one repeats.
        """
        self.routes.append((method, re.compile(path_regex), list(answers)))

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        for method, pattern, answers in self.routes:
            raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
            if method == request.method and pattern.search(raw_path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, Exception):
                    raise answer
                if callable(answer):
                    return answer(request)
                return answer
        return httpx.Response(599, text=f"no route for {request.method} {request.url.path}")

    def json_body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@dataclass
class RecordingLimiter:
    """A GraphLimiter that records slot use and throttling reports."""

    entered: list[str] = field(default_factory=list)
    active: int = 0
    throttled: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def slot(self, mailbox: str) -> AsyncIterator[None]:
        self.entered.append(mailbox)
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1

    async def report_throttled(self, mailbox: str, retry_after_s: float) -> None:
        # The slot must already be released when a throttle is reported.
        assert self.active == 0
        self.throttled.append((mailbox, retry_after_s))
