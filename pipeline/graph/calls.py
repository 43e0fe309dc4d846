"""The plumbing under every Graph call mailpipe makes: one request each, limited, translated.

:class:`GraphCalls` never retries: each call makes one HTTP request and either returns or raises
a :mod:`pipeline.errors` exception that says what to do next. Every request waits for
``limiter.slot(mailbox)``; a 429 (or a 503 with ``Retry-After``) is reported to
``limiter.report_throttled`` after the slot is released, before the error is raised. The
operations themselves are :class:`~pipeline.graph.drafts.DraftCalls` and
:class:`~pipeline.graph.mailer.GraphMailer`, which build on this class.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.response_handler import ResponseHandler
from kiota_http.middleware.options import ResponseHandlerOption
from msgraph.graph_service_client import GraphServiceClient

from pipeline.errors import GraphUnavailable
from pipeline.graph._sdk import MessageItemRequestBuilder
from pipeline.graph.errors import error_from_response, graph_errors
from pipeline.graph.limits import DEFAULT_THROTTLE_PAUSE_S, GraphLimiter
from pipeline.observability.graphcalls import GraphCallObserver
from pipeline.settings import Settings

__all__ = ["GraphCalls"]

T = TypeVar("T")


class _ResponseCapture(ResponseHandler):
    """Keeps the raw response so a send can insist on 202 (kiota accepts any 2xx)."""

    def __init__(self) -> None:
        self.response: httpx.Response | None = None

    async def handle_response_async(self, response: Any, error_map: Any = None) -> None:
        self.response = response


class GraphCalls:
    """What every Graph operation goes through: the SDK client, the limiter and the observer.

    ``graph``: the SDK client (see :func:`~pipeline.graph.client.build_graph_client`).
    ``upload_http``: a plain ``httpx.AsyncClient`` for upload URLs; it must carry no
    ``Authorization`` header or auth (upload URLs are pre-authenticated and answer 401
    InvalidAudience to a Graph token). ``limiter``: paces calls per mailbox. ``observer``:
    metrics and spans of every call (none by default). The mailer closes none of them.
    """

    def __init__(
        self,
        graph: GraphServiceClient,
        upload_http: httpx.AsyncClient,
        limiter: GraphLimiter,
        settings: Settings,
        *,
        observer: GraphCallObserver | None = None,
    ) -> None:
        if "authorization" in upload_http.headers or upload_http.auth is not None:
            raise ValueError("upload_http must not send an Authorization header")
        self._graph = graph
        self._upload_http = upload_http
        self._limiter = limiter
        self._settings = settings
        self._observer = observer or GraphCallObserver()

    async def _call(
        self,
        mailbox: str,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        is_send: bool = False,
    ) -> T:
        try:
            with self._observer.call(operation) as observed:
                async with self._limiter.slot(mailbox):
                    observed.slot_acquired()
                    with graph_errors(mailbox, operation, is_send=is_send):
                        return await call()
        except GraphUnavailable as exc:
            # A Retry-After (429, or a 503 that carries one) is Graph asking this mailbox to wait:
            # every worker in every process must hold back, not only this one.
            if exc.status_code == 429 or exc.retry_after_s is not None:
                pause = exc.retry_after_s if exc.retry_after_s is not None else DEFAULT_THROTTLE_PAUSE_S
                await self._limiter.report_throttled(mailbox, pause)
            raise

    async def _send(
        self,
        mailbox: str,
        operation: str,
        post: Callable[[RequestConfiguration[Any]], Awaitable[None]],
    ) -> None:
        capture = _ResponseCapture()
        config = RequestConfiguration[Any](options=[ResponseHandlerOption(capture)])

        async def call() -> None:
            await post(config)
            response = capture.response
            assert response is not None  # kiota hands every response to the handler
            if response.status_code != 202:
                raise error_from_response(response, mailbox=mailbox, operation=operation, is_send=True)

        await self._call(mailbox, operation, call, is_send=True)

    def _message(self, mailbox: str, message_id: str) -> MessageItemRequestBuilder:
        return self._graph.users.by_user_id(mailbox).messages.by_message_id(message_id)

    async def _upload_call(self, mailbox: str | None, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if mailbox is not None:
            return await self._call(mailbox, operation, call)
        with self._observer.call(operation), graph_errors(None, operation):
            return await call()
