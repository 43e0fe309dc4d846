"""Translate database driver errors into :mod:`pipeline.errors` at the store boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.errors import StoreUnavailable

__all__ = ["store_errors"]


@asynccontextmanager
async def store_errors(operation: str) -> AsyncIterator[None]:
    """Turn "the database is away or busy" into :class:`StoreUnavailable`; let bugs through.

    Constraint violations and programming errors are not translated: they mean mailpipe is
    wrong, and retrying them would hide it.
    """
    try:
        yield
    except (OperationalError, PoolTimeout, ConnectionError, OSError) as exc:
        raise StoreUnavailable(f"database unavailable during {operation}: {exc.__class__.__name__}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or _is_connection_error(exc.orig):
            raise StoreUnavailable(f"database connection lost during {operation}") from exc
        raise
    except Exception as exc:
        # SQLAlchemy does not wrap what the driver raises while connecting: a server that is
        # starting up or shutting down answers asyncpg's connect with CannotConnectNowError (57P03).
        if _is_connection_error(exc):
            raise StoreUnavailable(f"database unavailable during {operation}: {exc.__class__.__name__}") from exc
        raise


def _is_connection_error(error: BaseException | None) -> bool:
    name = type(error).__name__ if error is not None else ""
    return any(
        marker in name
        for marker in (
            "ConnectionDoesNotExist",
            "CannotConnectNow",
            "ConnectionFailure",
            "AdminShutdown",
            "TooManyConnections",
        )
    )
