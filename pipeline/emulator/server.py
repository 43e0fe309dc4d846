"""Running the emulator: blocking (:func:`run`, for the CLI) or in a thread (:func:`serve_in_thread`).

Both refuse a non-loopback host unless ``allow_public=True``: the emulator accepts one static
token and keeps every mail it is sent, which is fine on 127.0.0.1 and nowhere else.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from .app import create_app
from .config import EmulatorConfig
from .emulator import Emulator

__all__ = ["RunningEmulator", "run", "serve_in_thread"]

_STARTUP_TIMEOUT_S = 10.0
_SHUTDOWN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RunningEmulator:
    """A live emulator: where to reach it and its state object."""

    base_url: str
    """Graph base URL, e.g. ``http://127.0.0.1:PORT/v1.0`` (no trailing slash)."""
    root_url: str
    """Server root, e.g. ``http://127.0.0.1:PORT`` (control endpoints live under ``/_emulator``)."""
    emulator: Emulator
    host: str
    port: int


def _check_host(host: str, allow_public: bool) -> None:
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not allow_public:
        raise ValueError(
            f"refusing to serve the Graph emulator on {host!r}: it is a test tool; "
            "bind a loopback address or pass allow_public=True"
        )


def _uvicorn_config(app: object, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )


@contextmanager
def serve_in_thread(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow_public: bool = False,
) -> Iterator[RunningEmulator]:
    """Serve a fresh emulator from a background thread for the duration of the ``with`` block.

    ``port=0`` picks a free port (the socket is bound before the thread starts, so the port is
    known and cannot be taken in between).  On exit the server is asked to stop and the thread
    joined.
    """
    _check_host(host, allow_public)
    app = create_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on accepted sockets that
    # say so, and without it Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    bound_port = int(sock.getsockname()[1])
    server = uvicorn.Server(_uvicorn_config(app, host, bound_port, "warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"graph-emulator-{bound_port}", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Graph emulator did not start")
            time.sleep(0.01)
        netloc = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
        root_url = f"http://{netloc}:{bound_port}"
        yield RunningEmulator(
            base_url=f"{root_url}/v1.0",
            root_url=root_url,
            emulator=app.state.emulator,
            host=host,
            port=bound_port,
        )
    finally:
        server.should_exit = True
        thread.join(_SHUTDOWN_TIMEOUT_S)
        sock.close()


def run(
    config: EmulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8081,
    *,
    allow_public: bool = False,
) -> None:
    """Serve the emulator in the foreground until interrupted (``mailpipe graph-emulator``)."""
    _check_host(host, allow_public)
    uvicorn.Server(_uvicorn_config(create_app(config), host, port, "info")).run()
