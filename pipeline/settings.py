"""The one typed settings object. Built once at start-up and passed down; never read from globals.

Every field is read from the environment with the prefix ``MAILPIPE_`` (``amqp_url`` ->
``MAILPIPE_AMQP_URL``). A field ending in ``_file`` names a file (a mounted Kubernetes Secret)
whose content is the value. A bad value fails :func:`load_settings` with a :class:`ConfigError`
that names the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError
from pipeline.eventloop import EventLoopChoice

__all__ = ["ROLES", "RetryStep", "Role", "Settings", "load_settings"]

Role = Literal["ingest", "scheduler", "send-no-attachments", "send-attachments", "backup"]
ROLES: tuple[Role, ...] = ("ingest", "scheduler", "send-no-attachments", "send-attachments", "backup")
#: The steps whose attempts and retry delays are configured apart (pipeline.retry.retry_policy).
RetryStep = Literal["send", "upload", "backup", "download"]

REAL_GRAPH_HOSTS = frozenset(
    {"graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us", "microsoftgraph.chinacloudapi.cn"}
)


class Settings(BaseSettings):
    """Everything mailpipe can be told. Defaults run the demo on one machine."""

    model_config = SettingsConfigDict(env_prefix="MAILPIPE_", extra="ignore", frozen=True)

    # --- connections -------------------------------------------------------------------------
    amqp_url: str = "amqp://guest:guest@localhost:5672/"
    database_url: str = "sqlite+aiosqlite:///./mailpipe.db"
    #: PostgreSQL connections per process (plus half as many again in overflow). Handlers hold one
    #: only for a short transaction and otherwise queue for it, so this can be well below the sum
    #: of prefetch counts; keep pods x (pool + overflow) under the server's max_connections.
    db_pool_size: int = Field(default=10, ge=1, le=200)
    #: Apply database migrations when a role starts (the demo does; Helm runs a Job instead).
    auto_migrate: bool = False

    # --- Microsoft Graph ---------------------------------------------------------------------
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    graph_tenant_id: str | None = None
    graph_client_id: str | None = None
    graph_client_secret: SecretStr | None = None
    graph_client_secret_file: Path | None = None
    graph_certificate_path: Path | None = None
    graph_static_token: SecretStr | None = None
    graph_timeout_s: float = Field(default=60.0, gt=0)
    graph_connect_timeout_s: float = Field(default=10.0, gt=0)
    #: How long to look for a sent copy in Sent Items before deciding an unknown send did not happen.
    graph_sent_lookup_deadline_s: float = Field(default=60.0, ge=0)
    graph_sent_lookup_interval_s: float = Field(default=2.0, gt=0)
    graph_save_to_sent_items: bool = True
    #: Sent Items shows the sent copy seconds after the send: the backup is scheduled this long
    #: after it instead of looking too early and retrying.
    backup_delay_s: float = Field(default=2.0, ge=0)

    # --- message limits ----------------------------------------------------------------------
    max_message_bytes: int = Field(default=1_000_000, ge=1024)
    max_attachment_bytes: int = Field(default=150 * 1024 * 1024, ge=1)
    #: Files below this go inline (base64 in one request); larger ones use an upload session.
    inline_attachment_limit_bytes: int = Field(default=3_000_000, ge=1, le=3_000_000)
    upload_chunk_bytes: int = Field(default=10 * 327_680, ge=327_680)
    attachment_download_timeout_s: float = Field(default=60.0, gt=0)

    # --- consumers ---------------------------------------------------------------------------
    ingest_prefetch: int = Field(default=100, ge=1, le=2000)
    send_no_attachments_prefetch: int = Field(default=16, ge=1, le=2000)
    send_attachments_prefetch: int = Field(default=4, ge=1, le=2000)
    backup_prefetch: int = Field(default=16, ge=1, le=2000)
    graceful_timeout_s: float = Field(default=30.0, ge=0)

    # --- scheduler ---------------------------------------------------------------------------
    scheduler_poll_interval_s: float = Field(default=1.0, gt=0)
    #: After a wake-up, wait this long so a burst of wake-ups (two per email) becomes one round
    #: that claims a batch, instead of a round of three transactions per email.
    scheduler_wake_coalesce_s: float = Field(default=0.02, ge=0)
    scheduler_batch_size: int = Field(default=200, ge=1)
    max_in_flight_no_attachments: int = Field(default=200, ge=1)
    max_in_flight_attachments: int = Field(default=20, ge=1)
    max_in_flight_backup: int = Field(default=200, ge=1)
    #: A dispatch no worker has taken after this long is published again (lost publish).
    dispatch_timeout_s: float = Field(default=120.0, gt=0)
    #: A taken email with no worker progress for this long is re-dispatched (worker died).
    stuck_timeout_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)

    # --- retries (pipeline.retry.retry_policy) ------------------------------------------------
    #: Attempts of an email after which a failure in that step dead-letters it. The count is
    #: the email's (every dispatch is one attempt); the step that failed picks the limit.
    send_max_attempts: int = Field(default=8, ge=1)
    upload_max_attempts: int = Field(default=8, ge=1)
    backup_max_attempts: int = Field(default=10, ge=1)
    download_max_attempts: int = Field(default=5, ge=1)
    retry_base_delay_s: float = Field(default=1.0, gt=0)
    retry_max_delay_s: float = Field(default=300.0, gt=0)
    #: Per-step ``[base, max]`` delays overriding the two above, e.g. ``{"upload": [5, 600]}``.
    retry_delays_s: dict[RetryStep, tuple[float, float]] = Field(default_factory=dict)

    # --- Graph limiter -----------------------------------------------------------------------
    limiter_enabled: bool = True
    mailbox_rate_per_s: float = Field(default=16.0, gt=0)
    mailbox_burst: int = Field(default=16, ge=1)
    mailbox_max_concurrency: int = Field(default=4, ge=1)
    global_rate_per_s: float = Field(default=2000.0, gt=0)
    global_burst: int = Field(default=200, ge=1)
    limiter_refresh_s: float = Field(default=2.0, gt=0)

    # --- process -----------------------------------------------------------------------------
    #: ``uvloop`` (with ``mailpipe[uvloop]`` installed) or asyncio's loop; see pipeline.eventloop.
    event_loop: EventLoopChoice = "asyncio"
    #: Seconds between ``malloc_trim`` calls that give the C heap's free pages back (0: never);
    #: see pipeline.memory.
    memory_trim_interval_s: float = Field(default=60.0, ge=0)

    # --- observability -----------------------------------------------------------------------
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)
    otlp_endpoint: str | None = None

    # --- encryption and retention ------------------------------------------------------------
    #: Comma-separated ``key_id:base64key`` pairs; the first is used for new writes.
    encryption_keys: SecretStr | None = None
    encryption_keys_file: Path | None = None
    backup_retention_days: float = Field(default=365.0, gt=0)
    payload_retention_days: float = Field(default=30.0, gt=0)
    event_retention_days: float = Field(default=90.0, gt=0)
    retention_interval_s: float = Field(default=3600.0, gt=0)

    @field_validator("retry_delays_s")
    @classmethod
    def _delays_make_sense(cls, value: dict[RetryStep, tuple[float, float]]) -> dict[RetryStep, tuple[float, float]]:
        for step, (base, ceiling) in value.items():
            if not 0 < base <= ceiling:
                raise ValueError(f"{step}: [base, max] must satisfy 0 < base <= max, got [{base}, {ceiling}]")
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"amqp", "amqps"}:
            raise ValueError("must start with amqp:// or amqps://")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"sqlite+aiosqlite", "postgresql+asyncpg"}:
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("graph_base_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://graph.microsoft.com/v1.0")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials_fit_the_host(self) -> Settings:
        if self.graph_static_token is not None and self.graph_host in REAL_GRAPH_HOSTS:
            raise ValueError(
                "MAILPIPE_GRAPH_STATIC_TOKEN is for emulators only and is refused for the real "
                f"Graph host {self.graph_host}; set MAILPIPE_GRAPH_TENANT_ID, MAILPIPE_GRAPH_CLIENT_ID "
                "and a client secret or certificate instead"
            )
        if self.graph_secret_file_conflict:
            raise ValueError("set only one of MAILPIPE_GRAPH_CLIENT_SECRET and MAILPIPE_GRAPH_CLIENT_SECRET_FILE")
        return self

    @property
    def graph_secret_file_conflict(self) -> bool:
        return self.graph_client_secret is not None and self.graph_client_secret_file is not None

    @property
    def graph_host(self) -> str:
        return urlsplit(self.graph_base_url).hostname or ""

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def require_graph_credentials(self) -> None:
        """Raise :class:`ConfigError` unless the Graph roles have some way to authenticate."""
        if self.graph_static_token is not None:
            return
        missing = [
            name
            for name, value in (
                ("MAILPIPE_GRAPH_TENANT_ID", self.graph_tenant_id),
                ("MAILPIPE_GRAPH_CLIENT_ID", self.graph_client_id),
            )
            if not value
        ]
        has_secret = self.graph_client_secret or self.graph_client_secret_file or self.graph_certificate_path
        if not has_secret:
            missing.append(
                "MAILPIPE_GRAPH_CLIENT_SECRET (or MAILPIPE_GRAPH_CLIENT_SECRET_FILE, MAILPIPE_GRAPH_CERTIFICATE_PATH)"
            )
        if missing:
            raise ConfigError("Graph credentials missing: set " + ", ".join(missing))


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings` from the environment (and ``overrides``), naming any bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            name = f"MAILPIPE_{field.upper()}" if field else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from exc
