"""The event loop ``mailpipe run`` runs its roles on (``MAILPIPE_EVENT_LOOP``).

``asyncio`` (the default) is the standard library's loop. ``uvloop`` runs the roles on libuv;
it needs ``pip install 'mailpipe[uvloop]'`` (not built for Windows), and without it the start
stops with a :class:`ConfigError`.

Why uvloop is not the default (measured 2026-12-05, bench/README.md): draining a backlog of
2,000 emails on PostgreSQL, two back-to-back pairs, it cut mailpipe's CPU per email from 19.6
to 17.8-18.7 ms and raised the backed-up rate by 7-8 %. At a steady 50 emails/s it showed no
such gain (19.5-22.6 ms against 19.0-21.4), and the p99 from publish to sent was spread wider
(318 ms to 2.7 s over four runs, against 225-590 ms on asyncio's loop in the runs alternating
with them). A backlog is the exception and a trickle the usual case, so uvloop is there for
operators who measure their own load. Every library mailpipe uses supports it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from pipeline.errors import ConfigError

__all__ = ["EventLoopChoice", "loop_factory", "run", "running_loop_name"]

EventLoopChoice = Literal["asyncio", "uvloop"]
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
        raise ConfigError(
            "MAILPIPE_EVENT_LOOP=uvloop but uvloop is not installed: pip install 'mailpipe[uvloop]', "
            "or set MAILPIPE_EVENT_LOOP=asyncio"
        ) from exc
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
