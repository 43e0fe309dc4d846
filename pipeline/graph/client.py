"""Build msgraph-sdk's ``GraphServiceClient`` the way mailpipe needs it.

What differs from ``GraphServiceClient(credential)``:

* **No SDK retries.** kiota's RetryHandler retries POST (``sendMail`` and ``/send`` included)
  on 429/503/504, which can send a mail several times. It is installed with
  ``RetryHandlerOption(max_retries=0, should_retry=False)`` as its default, so every call is
  made exactly once and mailpipe's own retry policy decides.
* **The token only goes to Graph.** :class:`GraphTokenProvider` hands out a bearer token only
  for URLs under ``settings.graph_base_url`` (same scheme, host, port and path prefix), and
  its allowed-hosts validator lists only that host. Upload URLs and attachment sources never
  see it (an upload URL answers 401 InvalidAudience if they did).
* **Explicit base URL** without a trailing slash, so paths are ``/v1.0/users/...`` and not
  ``/v1.0//users/...``.
* **The URL is expanded once per request, quickly** (:class:`StreamingAdapter`). kiota
  re-expands a request's URL template every time ``RequestInformation.url`` is read, and one
  request reads it three times (host validation, token, the httpx request); in a profile that
  was about a twelfth of the backup worker's CPU. The one expansion left goes through
  :func:`pipeline.graph.urls.expand_url`, with kiota's as the fallback.
* **No URL replacement**: the middleware that rewrites ``/users/me-token-to-replace`` is off.
* **Streamed responses** (:meth:`StreamingAdapter.stream`): a body as large as a message's
  MIME is read piece by piece instead of whole, through the same auth and middleware.
* **A cheaper idle-connection check** in the connection pool (:mod:`pipeline.graph.transport`).

A client is bound to the event loop its httpx client first ran on: build one per loop and
close it with :meth:`MailpipeGraphClient.aclose` on that loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError
from azure.identity.aio import CertificateCredential, ClientSecretCredential
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.request_information import RequestInformation
from kiota_abstractions.request_option import RequestOption
from kiota_http.middleware.options import RetryHandlerOption, UrlReplaceHandlerOption
from msgraph._version import VERSION as MSGRAPH_VERSION
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_service_client import GraphServiceClient
from msgraph_core import APIVersion, GraphClientFactory
from msgraph_core.middleware.options import GraphTelemetryHandlerOption

from pipeline.errors import ConfigError, GraphUnavailable
from pipeline.graph.transport import install_readability_check
from pipeline.graph.urls import expand_url
from pipeline.settings import Settings

__all__ = ["GraphTokenProvider", "MailpipeGraphClient", "StreamingAdapter", "build_graph_client"]

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _origin_and_prefix(url: str) -> tuple[tuple[str, str, int | None], str]:
    parts = urlsplit(url)
    origin = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
    return origin, parts.path.rstrip("/") + "/"


class GraphTokenProvider(AccessTokenProvider):
    """Supplies the bearer token for Graph requests, and for nothing else.

    The token comes from a fixed string (an emulator's static token) or from an azure-identity
    async credential for the scope ``https://{graph host}/.default``. A credential's token is
    only handed out over https or to a loopback host.

    Build it with :meth:`from_settings`. It owns the credential it created there; call
    :meth:`close` once, on the loop that used it, when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        static_token: str | None = None,
        credential: AsyncTokenCredential | None = None,
        scope: str | None = None,
    ) -> None:
        if (static_token is None) == (credential is None):
            raise ValueError("give exactly one of static_token and credential")
        self._origin, self._path_prefix = _origin_and_prefix(base_url)
        self._static_token = static_token
        self._credential = credential
        self._scope = scope or f"https://{self._origin[1]}/.default"
        self._validator = AllowedHostsValidator([self._origin[1]])

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphTokenProvider:
        """Build the provider ``settings`` call for; raise :class:`ConfigError` if they call for none.

        A static token wins; otherwise a certificate (``graph_certificate_path``) or a client
        secret (``graph_client_secret`` or the file ``graph_client_secret_file``) with
        ``graph_tenant_id`` and ``graph_client_id``.
        """
        settings.require_graph_credentials()
        base_url = settings.graph_base_url
        if settings.graph_static_token is not None:
            return cls(base_url, static_token=settings.graph_static_token.get_secret_value())
        tenant, client_id = settings.graph_tenant_id or "", settings.graph_client_id or ""
        credential: AsyncTokenCredential
        if settings.graph_certificate_path is not None:
            credential = CertificateCredential(tenant, client_id, certificate_path=str(settings.graph_certificate_path))
        else:
            if settings.graph_client_secret is not None:
                secret = settings.graph_client_secret.get_secret_value()
            else:
                path = settings.graph_client_secret_file
                assert path is not None  # require_graph_credentials() checked one is set
                try:
                    secret = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"MAILPIPE_GRAPH_CLIENT_SECRET_FILE: cannot read {path}") from exc
            credential = ClientSecretCredential(tenant, client_id, secret)
        return cls(base_url, credential=credential)

    def _may_receive_token(self, uri: str) -> bool:
        if not self._validator.is_url_host_valid(uri):
            return False
        origin, path = _origin_and_prefix(uri)
        if origin != self._origin or not path.startswith(self._path_prefix):
            return False
        return self._credential is None or origin[0] == "https" or origin[1] in _LOOPBACK_HOSTS

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        """Return the token for ``uri``, or ``""`` (no Authorization header) if it is not Graph's.

        Raises :class:`~pipeline.errors.GraphUnavailable` if the credential cannot get a token.
        """
        if not self._may_receive_token(uri):
            return ""
        if self._static_token is not None:
            return self._static_token
        assert self._credential is not None
        claims = (additional_authentication_context or {}).get("claims")
        try:
            token = await self._credential.get_token(self._scope, claims=claims)
        except AzureError as exc:
            raise GraphUnavailable(
                f"cannot get a Graph token for {self._scope}: {type(exc).__name__}",
                code="TokenAcquisitionFailed",
            ) from exc
        return token.token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        """The validator listing the Graph host alone."""
        return self._validator

    async def close(self) -> None:
        """Close the azure-identity credential, if any. Safe to call twice."""
        if self._credential is not None:
            await self._credential.close()


class MailpipeGraphClient(GraphServiceClient):
    """A ``GraphServiceClient`` that knows what it must close.

    Use it as an async context manager or call :meth:`aclose`. It closes the httpx client and
    the token provider only if :func:`build_graph_client` created them.
    """

    def __init__(
        self,
        request_adapter: GraphRequestAdapter,
        *,
        token_provider: GraphTokenProvider,
        owned_http_client: httpx.AsyncClient | None,
        owns_token_provider: bool,
    ) -> None:
        super().__init__(request_adapter=request_adapter)
        self.token_provider = token_provider
        self._owned_http_client = owned_http_client
        self._owns_token_provider = owns_token_provider

    async def aclose(self) -> None:
        """Close what this client created (httpx client, credential)."""
        if self._owned_http_client is not None:
            await self._owned_http_client.aclose()
        if self._owns_token_provider:
            await self.token_provider.close()

    async def __aenter__(self) -> MailpipeGraphClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class StreamingAdapter(GraphRequestAdapter):
    """kiota's adapter, plus :meth:`stream`, and each request's URL fixed once its base URL is set."""

    @asynccontextmanager
    async def stream(self, request_info: RequestInformation) -> AsyncIterator[httpx.Response]:
        """Send the request as ``send_primitive_async`` would; yield the response unread.

        The body is the caller's to read (``aiter_bytes``) inside the ``async with``; it is
        closed on exit. Status codes are not checked. Unlike kiota's own sends, a 401 that
        carries a claims challenge (continuous access evaluation) is not retried with the
        claims: it is returned like any other answer.
        """
        self.set_base_url_for_request_information(request_info)
        request = await self.convert_to_native_async(request_info)
        response = await self._http_client.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()

    def set_base_url_for_request_information(self, request_info: RequestInformation) -> None:
        super().set_base_url_for_request_information(request_info)
        url = None
        if not _url_already_fixed(request_info):
            values = {**request_info.query_parameters, **request_info.path_parameters}
            url = expand_url(request_info.url_template or "", values)
        # The setter stores the URL, which every later read returns as it is; it clears the
        # path and query parameters, which only the expansion used.
        request_info.url = url or request_info.url


def _url_already_fixed(request_info: RequestInformation) -> bool:
    # A raw URL (``with_url``) or one set earlier wins over the template in kiota's getter.
    if request_info.path_parameters.get(RequestInformation.RAW_URL_KEY):
        return True
    return bool(vars(request_info).get("_RequestInformation__uri"))


class _ClosingTransport(httpx.AsyncBaseTransport):
    """Forwards ``aclose`` to the connection pool under msgraph-core's transport.

    msgraph-core 1.5.2's ``AsyncGraphTransport`` wraps the real transport but has no
    ``aclose``, so ``AsyncClient.aclose()`` would leave every pooled connection open.
    """

    def __init__(self, wrapped: httpx.AsyncBaseTransport, inner: httpx.AsyncBaseTransport) -> None:
        self._wrapped = wrapped
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._wrapped.handle_async_request(request)

    async def aclose(self) -> None:
        await self._wrapped.aclose()
        await self._inner.aclose()  # closing a closed pool again is harmless


def _install_middleware(http_client: httpx.AsyncClient) -> None:
    """Put the SDK middleware (retries off) in front of every transport of ``http_client``."""
    # httpx has no public API to wrap a client's transports; msgraph-core's factory uses these too.
    transport, mounts = http_client._transport, dict(http_client._mounts)
    GraphClientFactory.create_with_default_middleware(client=http_client, options=_middleware_options())
    http_client._transport = _ClosingTransport(http_client._transport, transport)
    http_client._mounts = {
        pattern: None if wrapped is None else _ClosingTransport(wrapped, mounts.get(pattern) or wrapped)
        for pattern, wrapped in http_client._mounts.items()
    }


def _middleware_options() -> dict[str, RequestOption]:
    # msgraph's defaults, except: retries off, and no URL replacement. The replacer exists for
    # the SDK's `/me` builders, which mailpipe never uses (it always names the mailbox); enabled,
    # it prints and re-parses every request's URL, a long one for each Sent Items look-up.
    return {
        RetryHandlerOption.get_key(): RetryHandlerOption(max_retries=0, should_retry=False),
        UrlReplaceHandlerOption.get_key(): UrlReplaceHandlerOption(enabled=False),
        GraphTelemetryHandlerOption.get_key(): GraphTelemetryHandlerOption(
            api_version=APIVersion.v1, sdk_version=MSGRAPH_VERSION
        ),
    }


def build_graph_client(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    token_provider: GraphTokenProvider | None = None,
) -> MailpipeGraphClient:
    """Return a new Graph client for ``settings``; no state is shared between calls.

    ``http_client``: the httpx client to send through (tests pass one with a
    ``MockTransport``). Its transports are wrapped in the SDK middleware (closing the client
    still closes them) and it stays the caller's to close. Without it an HTTP/2-capable client
    is created and owned. Either way the timeouts are ``settings.graph_timeout_s`` (each of
    read, write, pool) and ``settings.graph_connect_timeout_s``.

    ``token_provider``: defaults to :meth:`GraphTokenProvider.from_settings`, then owned.
    """
    provider = token_provider or GraphTokenProvider.from_settings(settings)
    timeout = httpx.Timeout(settings.graph_timeout_s, connect=settings.graph_connect_timeout_s)
    owned = None
    if http_client is None:
        owned = http_client = httpx.AsyncClient(timeout=timeout, http2=True)
    http_client.timeout = timeout
    install_readability_check(http_client)  # before the middleware hides the transports' pools
    _install_middleware(http_client)
    adapter = StreamingAdapter(BaseBearerTokenAuthenticationProvider(provider), http_client)
    adapter.base_url = settings.graph_base_url.rstrip("/")
    return MailpipeGraphClient(
        adapter,
        token_provider=provider,
        owned_http_client=owned,
        owns_token_provider=token_provider is None,
    )
