"""build_graph_client: SDK retries off, token only for the Graph base URL, explicit base URL."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from azure.identity.aio import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from graph_mocks import GRAPH_BASE, MAILBOX, TOKEN, GraphMock, graph_error
from stduritemplate import StdUriTemplate

import pipeline.graph as package
import pipeline.graph.client as client_module
from pipeline.errors import ConfigError, GraphUnavailable, SendOutcomeUnknown
from pipeline.graph import GraphMailer, GraphTokenProvider, MailpipeGraphClient, build_graph_client
from pipeline.graph.message import OutgoingMessage
from pipeline.graph.urls import expand_url
from pipeline.settings import Settings


def _self_signed_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailpipe-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def _message() -> OutgoingMessage:
    return OutgoingMessage(
        from_address=(MAILBOX, None),
        to=[("rcpt@example.test", "R")],
        subject="s",
        body_content="b",
        correlation_key="k-1",
    )


class TestRetryHandlerIsOff:
    async def test_503_on_send_mail_is_sent_once_and_surfaces_fractional_retry_after(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        """The SDK would retry a 503 POST up to 3 times; ours must send exactly one request."""
        graph_mock.on(
            "POST",
            "/sendMail$",
            graph_error(503, "ErrorServerBusy", retry_after="2.128"),
            httpx.Response(202),
        )

        with pytest.raises(SendOutcomeUnknown) as caught:
            await mailer.send_mail(MAILBOX, _message())

        assert len(graph_mock.requests) == 1
        assert caught.value.status_code == 503
        assert caught.value.code == "ErrorServerBusy"
        assert caught.value.retry_after_s == pytest.approx(2.128)

    async def test_503_on_a_read_is_sent_once_with_http_date_retry_after(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        when = datetime.now(UTC) + timedelta(seconds=120)
        graph_mock.on(
            "GET",
            "/messages/m1$",
            graph_error(503, "ErrorServerBusy", retry_after=format_datetime(when, usegmt=True)),
            httpx.Response(200, json={"id": "m1"}),
        )

        with pytest.raises(GraphUnavailable) as caught:
            await mailer.get_message(MAILBOX, "m1")

        assert len(graph_mock.requests) == 1
        assert type(caught.value) is GraphUnavailable
        assert caught.value.retry_after_s is not None
        assert 100 < caught.value.retry_after_s <= 120

    async def test_429_is_not_retried_either(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        graph_mock.on("POST", "/messages$", graph_error(429, "ApplicationThrottled", retry_after="1"))

        with pytest.raises(GraphUnavailable):
            await mailer.create_draft(MAILBOX, _message())

        assert len(graph_mock.requests) == 1
        assert "Retry-Attempt" not in graph_mock.requests[0].headers


class TestRequestsOnTheWire:
    async def test_graph_requests_use_the_base_url_without_double_slash_and_carry_the_token(
        self, mailer: GraphMailer, graph_mock: GraphMock
    ) -> None:
        graph_mock.on("GET", "/messages/m1$", httpx.Response(200, json={"id": "m1", "isDraft": True}))

        await mailer.get_message(MAILBOX, "m1")

        request = graph_mock.requests[0]
        assert str(request.url).startswith(f"{GRAPH_BASE}/users/sender%40contoso.test/messages/m1")
        assert "//users" not in request.url.path
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"

    async def test_each_request_expands_its_url_template_once_without_kiota_and_keeps_its_query(
        self, mailer: GraphMailer, graph_mock: GraphMock, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fast: list[str] = []
        by_kiota: list[str] = []
        real_expand = StdUriTemplate.expand

        def counting_fast(template: str, values: Mapping[str, object]) -> str | None:
            fast.append(template)
            return expand_url(template, values)

        def counting_kiota(template: str, substitutions: dict[str, object]) -> str:
            by_kiota.append(template)
            return real_expand(template, substitutions)

        monkeypatch.setattr(client_module, "expand_url", counting_fast)
        monkeypatch.setattr(StdUriTemplate, "expand", staticmethod(counting_kiota))
        graph_mock.on("GET", "/mailFolders/SentItems/messages", httpx.Response(200, json={"value": []}))

        assert await mailer.find_by_correlation(MAILBOX, "k-1", "SentItems") is None

        # kiota alone expanded it three times, one character at a time
        assert (len(fast), by_kiota) == (1, [])
        query = graph_mock.requests[0].url.params
        assert "k-1" in query["$filter"]
        assert query["$select"] == "id,internetMessageId,isDraft"

    async def test_upload_put_carries_no_authorization_header(self, mailer: GraphMailer, graph_mock: GraphMock) -> None:
        """The Graph token must never reach the upload host (it answers 401 InvalidAudience)."""
        graph_mock.on("PUT", "/AttachmentSessions", httpx.Response(200, json={"nextExpectedRanges": ["4"]}))

        await mailer.upload_chunk("https://outlook.test/AttachmentSessions('s')?authtoken=x", 0, b"abcd", 8)

        request = graph_mock.requests[0]
        assert request.url.host == "outlook.test"
        assert "authorization" not in request.headers

    async def test_sdk_requests_to_a_foreign_url_get_no_token(
        self, graph_client: MailpipeGraphClient, graph_mock: GraphMock
    ) -> None:
        """Even a request pushed through the SDK adapter (e.g. a nextLink elsewhere) gets no token."""
        graph_mock.on("GET", "/v1.0/users/u/messages", httpx.Response(200, json={"value": []}))

        await graph_client.users.with_url("https://evil.test/v1.0/users/u/messages").get()

        assert graph_mock.requests[0].url.host == "evil.test"
        assert "authorization" not in graph_mock.requests[0].headers


class TestTokenProvider:
    async def test_token_only_for_urls_under_the_graph_base_url(self) -> None:
        provider = GraphTokenProvider("http://127.0.0.1:8080/v1.0", static_token="t")

        assert await provider.get_authorization_token("http://127.0.0.1:8080/v1.0/users/a/sendMail") == "t"
        # same host, other port / scheme / path (an emulator's upload URL), other host: nothing
        assert await provider.get_authorization_token("http://127.0.0.1:9999/v1.0/users/a") == ""
        assert await provider.get_authorization_token("https://127.0.0.1:8080/v1.0/users/a") == ""
        assert await provider.get_authorization_token("http://127.0.0.1:8080/upload/s1?authtoken=x") == ""
        assert await provider.get_authorization_token("http://127.0.0.1:8080/v1.0evil/x") == ""
        assert await provider.get_authorization_token("https://outlook.office.com/api/v2.0/x") == ""
        assert provider.get_allowed_hosts_validator().get_allowed_hosts() == ["127.0.0.1"]

    async def test_credential_token_is_not_sent_over_plain_http_to_a_remote_host(self) -> None:
        class FakeCredential:
            scopes: list[str] = []

            async def get_token(self, *scopes: str, **kwargs: object) -> object:
                self.scopes += scopes
                return type("T", (), {"token": "real-token"})()

            async def close(self) -> None:
                pass

        credential = FakeCredential()
        remote = GraphTokenProvider("http://graph.internal/v1.0", credential=credential)  # type: ignore[arg-type]
        secure = GraphTokenProvider("https://graph.microsoft.com/v1.0", credential=credential)  # type: ignore[arg-type]

        assert await remote.get_authorization_token("http://graph.internal/v1.0/users/a") == ""
        assert await secure.get_authorization_token("https://graph.microsoft.com/v1.0/users/a") == "real-token"
        assert credential.scopes == ["https://graph.microsoft.com/.default"]

    async def test_from_settings_builds_a_client_secret_credential_from_a_secret_file(self, tmp_path: Path) -> None:
        secret = tmp_path / "secret"
        secret.write_text("s3cret\n", encoding="utf-8")
        settings = Settings(
            graph_tenant_id="tenant",
            graph_client_id="client",
            graph_client_secret_file=secret,
        )

        provider = GraphTokenProvider.from_settings(settings)
        try:
            assert isinstance(provider._credential, ClientSecretCredential)
            assert provider._scope == "https://graph.microsoft.com/.default"
        finally:
            await provider.close()

    async def test_from_settings_uses_a_certificate_when_given(self, tmp_path: Path) -> None:
        cert = tmp_path / "cert.pem"
        cert.write_bytes(_self_signed_pem())
        settings = Settings(graph_tenant_id="t", graph_client_id="c", graph_certificate_path=cert)

        provider = GraphTokenProvider.from_settings(settings)
        try:
            assert isinstance(provider._credential, CertificateCredential)
        finally:
            await provider.close()

    def test_from_settings_without_credentials_is_a_config_error(self) -> None:
        with pytest.raises(ConfigError, match="MAILPIPE_GRAPH_TENANT_ID"):
            GraphTokenProvider.from_settings(Settings())


async def test_client_closes_what_it_created_and_not_what_it_was_given(settings: Settings) -> None:
    owned = build_graph_client(settings)
    await owned.aclose()
    assert owned._owned_http_client is not None
    assert owned._owned_http_client.is_closed

    async with httpx.AsyncClient() as given:
        async with build_graph_client(settings, http_client=given):
            pass
        assert not given.is_closed


async def test_closing_the_client_closes_the_connection_pool_under_the_sdk_middleware(
    settings: Settings,
) -> None:
    """msgraph-core's AsyncGraphTransport has no aclose(); the pool must still be closed."""

    class Pool(httpx.AsyncBaseTransport):
        closed = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(204)

        async def aclose(self) -> None:
            self.closed = True

    pool = Pool()
    async with httpx.AsyncClient(transport=pool) as http:
        build_graph_client(settings, http_client=http)
    assert pool.closed


async def test_timeouts_come_from_settings(settings: Settings) -> None:
    custom = settings.model_copy(update={"graph_timeout_s": 42.0, "graph_connect_timeout_s": 7.0})
    async with httpx.AsyncClient() as given, build_graph_client(custom, http_client=given) as client:
        assert given.timeout == httpx.Timeout(42.0, connect=7.0)
        assert client.request_adapter.base_url == GRAPH_BASE


def test_public_api_is_pinned() -> None:
    """Every name in pipeline.graph.__all__ exists, and every public name is listed."""
    public = {name for name in vars(package) if not name.startswith("_")}
    modules = {"calls", "client", "drafts", "errors", "limits", "mailer", "message", "transport", "upload", "urls"}
    assert set(package.__all__) == public - modules


async def test_httpcore_learns_the_event_loop_without_an_import_search_per_call() -> None:
    """httpcore imports sniffio on every lock and event it makes; that import must succeed.

    A failed import is not cached, so without sniffio each Graph call searched ``sys.path``
    several times over (7 % of the backup worker's CPU in a profile).
    """
    from httpcore._synchronization import current_async_library  # noqa: PLC0415 - private, pinned here

    assert current_async_library() == "asyncio"
    assert "sniffio" in sys.modules
