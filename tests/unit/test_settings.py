"""Settings fail at start with a message that names the bad variable."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_a_bad_value_names_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILPIPE_INGEST_PREFETCH", "lots")
    with pytest.raises(ConfigError, match="MAILPIPE_INGEST_PREFETCH"):
        load_settings()


def test_database_url_must_use_an_async_driver() -> None:
    with pytest.raises(ConfigError, match="MAILPIPE_DATABASE_URL"):
        load_settings(database_url="postgresql://localhost/mail")


def test_static_token_is_refused_for_the_real_graph_host() -> None:
    with pytest.raises(ConfigError, match="emulators only"):
        load_settings(graph_static_token="abc")


def test_static_token_is_accepted_for_an_emulator() -> None:
    settings = load_settings(graph_static_token="abc", graph_base_url="http://127.0.0.1:8081/v1.0/")
    assert settings.graph_base_url == "http://127.0.0.1:8081/v1.0"


def test_graph_roles_need_credentials() -> None:
    settings = load_settings(graph_tenant_id="t")
    with pytest.raises(ConfigError, match="MAILPIPE_GRAPH_CLIENT_ID"):
        settings.require_graph_credentials()


def test_secrets_do_not_appear_in_the_settings_repr() -> None:
    settings = load_settings(graph_client_secret="s3cr3t-value", graph_tenant_id="t", graph_client_id="c")
    assert "s3cr3t-value" not in repr(settings)
