"""The event loop ``mailpipe run`` runs its roles on (``MAILPIPE_EVENT_LOOP``).

``auto`` (the default) picks uvloop where it is installed: it is a dependency on every platform
but Windows. ``uvloop`` insists on it and stops the start with a :class:`ConfigError` when it is
missing; ``asyncio`` keeps the standard library's loop (for asyncio's debug mode, or to rule the
loop out while chasing a bug).

Why uvloop: a role's own work per email is small, so much of its CPU is the loop's handling of
sockets to RabbitMQ, the database and Graph. On the 2,000-email PostgreSQL throughput benchmark
(two back-to-back pairs, 2026-12-05) uvloop cut mailpipe's CPU per email from 19.6 to
17.8-18.7 ms and raised the backed-up rate by 7-8 % (bench/README.md). Every library mailpipe
uses (aio-pika, asyncpg, aiosqlite, httpx/anyio, uvicorn) supports it.

The tests run in-process on the standard loop, and the role processes they start run on uvloop,
so both loops carry the whole pipeline in CI.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from pipeline.errors import ConfigError

__all__ = ["EventLoopChoice", "loop_factory", "run", "running_loop_name"]

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the chosen loop, or None for the standard library's.

    Raises :class:`ConfigError` when ``choice`` is ``uvloop`` and uvloop cannot be imported.
    """
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError(
                "MAILPIPE_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop), "
                "or set MAILPIPE_EVENT_LOOP=asyncio"
            ) from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Callable[[], Coroutine[Any, Any, T]], choice: EventLoopChoice) -> T:
    """Run ``main()`` to completion on the chosen loop (the loop is chosen before ``main`` is called)."""
    factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: the package of the running loop's class, for the start-up log."""
    return type(asyncio.get_running_loop()).__module__.partition(".")[0]
