"""Structured logging: JSON lines in production, readable lines on a terminal.

Handlers bind ``publisher_message_id``, ``incoming_email_id`` and friends with structlog's
context variables (:mod:`pipeline.observability.edge`), so every line of one message's handling
carries them. Secrets never reach a log line: settings hold them as ``SecretStr``, mailpipe
never logs a message body, and third-party loggers that print payloads are held back (below).
"""

from __future__ import annotations

import logging
import sys

import faststream  # noqa: F401 - creates FastStream's own logger, which configure_logging re-routes
import structlog

from pipeline.settings import Settings

__all__ = ["QUIET_LOGGERS", "configure_logging"]

#: Libraries that log payloads, never below these levels, whatever ``MAILPIPE_LOG_LEVEL`` says:
#: aiosqlite prints every SQL statement with its parameters (payloads, upload URLs) at DEBUG,
#: aiormq and aio-pika print raw AMQP frames (message bodies), httpx logs each request URL at
#: INFO (upload URLs carry an auth token in the query), httpcore logs response headers.
QUIET_LOGGERS = {
    "aiosqlite": logging.INFO,
    "aiormq": logging.INFO,
    "aio_pika": logging.INFO,
    "httpx": logging.WARNING,
    "httpcore": logging.INFO,
    "sqlalchemy.engine": logging.WARNING,
    "asyncpg": logging.INFO,
}


def configure_logging(settings: Settings) -> None:
    """Route structlog and the stdlib (FastStream, aio-pika, uvicorn) through one renderer."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name, floor in QUIET_LOGGERS.items():
        quiet = logging.getLogger(name)
        quiet.setLevel(max(floor, root.level))
    # FastStream's app logger has its own coloured handler and does not propagate: route it
    # through the handler above so its lines are JSON like every other.
    own = logging.getLogger("faststream")
    own.handlers.clear()
    own.propagate = True
