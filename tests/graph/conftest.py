"""Fixtures for the Graph client: the real msgraph-sdk pipeline over an ``httpx.MockTransport``.

``graph_mock`` plays both Graph and the upload host: tests register answers per method and
path, and every request that reached the wire is kept in ``graph_mock.requests``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from graph_mocks import GRAPH_BASE, TOKEN, GraphMock, RecordingLimiter

from pipeline.graph import GraphMailer, MailpipeGraphClient, build_graph_client
from pipeline.settings import Settings


@pytest.fixture
def settings() -> Settings:
    return Settings(graph_base_url=GRAPH_BASE, graph_static_token=TOKEN)  # type: ignore[arg-type]


@pytest.fixture
def graph_mock() -> GraphMock:
    return GraphMock()


@pytest.fixture
async def graph_client(settings: Settings, graph_mock: GraphMock) -> AsyncIterator[MailpipeGraphClient]:
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(graph_mock)) as http,
        build_graph_client(settings, http_client=http) as client,
    ):
        yield client


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
async def mailer(
    graph_client: MailpipeGraphClient, graph_mock: GraphMock, limiter: RecordingLimiter, settings: Settings
) -> AsyncIterator[GraphMailer]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(graph_mock)) as upload_http:
        yield GraphMailer(graph_client, upload_http, limiter, settings)
