"""The front door of every ``/v1.0`` call: auth, statistics, faults, throttling, latency.

Order, chosen to match what a client of real Graph can observe:

1. bearer token check -> 401 ``InvalidAuthenticationToken`` (not counted against the mailbox);
2. the call is counted for its mailbox, flagged *early* if it ignores a recent Retry-After;
   a mailbox in ``denied_mailboxes`` is refused here with 403 ``ErrorAccessDenied``;
3. injected 503 ``ErrorServerBusy`` (``fail_503_rate``), before any effect;
4. throttling (:mod:`.throttle`) -> 429 ``ApplicationThrottled`` with ``Retry-After``;
5. ``latency_s`` while holding the concurrency slot, then the route handler;
6. for sends only: injected 504 ``UnknownError`` *after* the send took effect.

A :class:`GraphError` from any step becomes Graph's error body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .clock import monotonic
from .emulator import Emulator
from .errors import GraphError, error_response
from .faults import BUSY_RETRY_AFTER_S, gateway_timeout, server_busy
from .throttle import ThrottledError

__all__ = ["Endpoint", "Handler", "access_denied", "graph_endpoint"]

#: A route handler: the request and the emulator in, a response out (or a GraphError raised).
Handler = Callable[[Request, Emulator], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

_WWW_AUTHENTICATE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    'client_id="00000003-0000-0000-c000-000000000000"'
)


def access_denied() -> GraphError:
    """The 403 Exchange Online answers for a mailbox an application access policy excludes."""
    return GraphError(
        403,
        "ErrorAccessDenied",
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
    )


def _check_auth(request: Request, token: str) -> None:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "Access token is empty.",
            headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
        )
    if presented.strip() != token:
        raise GraphError(
            401,
            "InvalidAuthenticationToken",
            "Access token validation failure. Invalid audience.",
            headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
        )


async def _guarded(request: Request, emulator: Emulator, handler: Handler, *, sends: bool) -> Response:
    config = emulator.config
    _check_auth(request, config.static_token)
    mailbox = str(request.path_params["user"]).lower()
    now = monotonic()
    early = emulator.throttle.is_early(mailbox, now)
    emulator.recorder.record_request(mailbox, mono_now=now, wall_now=time.time(), early=early)
    if mailbox in {denied.lower() for denied in config.denied_mailboxes}:
        raise access_denied()
    if emulator.faults.roll(config.fail_503_rate):
        emulator.recorder.bump(mailbox, "faults_503")
        emulator.throttle.note_retry_after(mailbox, now, BUSY_RETRY_AFTER_S)
        raise server_busy()
    try:
        in_flight = emulator.throttle.admit(mailbox, config, now)
    except ThrottledError as throttled:
        emulator.recorder.bump(mailbox, f"throttled_{throttled.kind}")
        raise
    emulator.recorder.record_admitted(mailbox, in_flight)
    try:
        if config.latency_s > 0:
            await asyncio.sleep(config.latency_s)
        response = await handler(request, emulator)
    finally:
        emulator.throttle.release(mailbox)
    if sends and response.status_code == 202 and emulator.faults.roll(config.fail_504_after_send_rate):
        emulator.recorder.bump(mailbox, "faults_504")
        raise gateway_timeout()
    return response


def graph_endpoint(emulator: Emulator, handler: Handler, *, sends: bool = False) -> Endpoint:
    """Wrap ``handler`` in the gate; ``sends`` marks sendMail and /send for 504 injection."""

    async def endpoint(request: Request) -> Response:
        try:
            return await _guarded(request, emulator, handler, sends=sends)
        except GraphError as error:
            return error_response(request, error)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening; just end the request cleanly

    return endpoint
