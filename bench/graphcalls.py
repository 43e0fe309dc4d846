"""``graph-calls``: the CPU one Graph call costs the calling process, mailpipe's client against plain httpx.

The three calls every email without attachments makes (``sendMail``, the Sent Items look-up by
correlation key, ``$value``) are made ``n`` times each against the emulator in its own process:
through :class:`pipeline.graph.GraphMailer` (msgraph-sdk, kiota's middleware, no limiter) and
with a plain ``httpx.AsyncClient``, the Celery peer's way; one at a time, and 16 at a time as a
worker with the default prefetch makes them (over HTTP/1.1, 16 pooled connections). ``time.process_time``
of this process around each loop gives the client's CPU per call; the emulator's CPU is reported
apart. It isolates what the SDK path costs from everything else a worker does per email.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from bench.infra import TOKEN, Emulator
from bench.procmon import Monitor
from pipeline.graph import GraphMailer, NoLimiter, OutgoingMessage, build_graph_client
from pipeline.graph.mailer import correlation_filter
from pipeline.graph.message import send_mail_json
from pipeline.settings import Settings

__all__ = ["graph_calls"]

MAILBOX = "sender0@contoso.example"
WARM_UP = 20
SENT_ITEMS_DELAY_S = 0.2

T = TypeVar("T")
R = TypeVar("R")


def _message(key: str) -> OutgoingMessage:
    return OutgoingMessage(
        from_address=(MAILBOX, "Sender"),
        to=[("customer@fabrikam.example", None)],
        subject=f"Benchmark {key}",
        body_content=f"<p>Benchmark email {key}.</p>",
        body_type="html",
        correlation_key=key,
    )


def _ms_per_call(started: float, calls: int) -> float:
    return round((time.process_time() - started) * 1000 / calls, 3)


async def _each(items: list[T], call: Callable[[T], Awaitable[R]], concurrency: int) -> list[R]:
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def _timed(
    keys: list[str],
    send: Callable[[str], Awaitable[None]],
    find: Callable[[str], Awaitable[str]],
    mime: Callable[[str], Awaitable[None]],
    concurrency: int,
) -> dict[str, float]:
    result: dict[str, float] = {}
    started = time.process_time()
    await _each(keys, send, concurrency)
    result["sendMail"] = _ms_per_call(started, len(keys))
    await asyncio.sleep(SENT_ITEMS_DELAY_S + 0.2)
    started = time.process_time()
    ids = await _each(keys, find, concurrency)
    result["find in Sent Items"] = _ms_per_call(started, len(keys))
    started = time.process_time()
    await _each(ids, mime, concurrency)
    result["$value"] = _ms_per_call(started, len(keys))
    return result


async def _warm_then_measure(
    send: Callable[[str], Awaitable[None]],
    find: Callable[[str], Awaitable[str]],
    mime: Callable[[str], Awaitable[None]],
    concurrency: int,
    n: int,
) -> dict[str, float]:
    # The warm-up, on the same client, opens the pool's connections and does the first imports.
    await _timed([f"warm-{uuid.uuid4()}" for _ in range(WARM_UP)], send, find, mime, concurrency)
    return await _timed([f"k-{uuid.uuid4()}" for _ in range(n)], send, find, mime, concurrency)


async def _through_mailpipe(base_url: str, concurrency: int, n: int) -> dict[str, float]:
    settings = Settings(graph_base_url=base_url, graph_static_token=TOKEN)
    async with build_graph_client(settings) as graph, httpx.AsyncClient() as upload_http:
        mailer = GraphMailer(graph, upload_http, NoLimiter(), settings)

        async def send(key: str) -> None:
            await mailer.send_mail(MAILBOX, _message(key))

        async def find(key: str) -> str:
            found = await mailer.find_by_correlation(MAILBOX, key, "SentItems")
            assert found is not None, f"the sent copy of {key} was not found"
            return found.id

        async def mime(message_id: str) -> None:
            await mailer.get_mime(MAILBOX, message_id)

        return await _warm_then_measure(send, find, mime, concurrency, n)


async def _through_httpx(base_url: str, concurrency: int, n: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:

        async def send(key: str) -> None:
            body = send_mail_json(_message(key), save_to_sent_items=True)
            response = await client.post(
                f"/users/{MAILBOX}/sendMail", content=body, headers={"Content-Type": "application/json"}
            )
            response.raise_for_status()

        async def find(key: str) -> str:
            params = {"$filter": correlation_filter(key), "$select": "id,internetMessageId,isDraft"}
            listed = await client.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages", params=params)
            return str(listed.json()["value"][0]["id"])

        async def mime(message_id: str) -> None:
            (await client.get(f"/users/{MAILBOX}/messages/{message_id}/$value")).raise_for_status()

        return await _warm_then_measure(send, find, mime, concurrency, n)


def graph_calls(n: int) -> dict[str, Any]:
    """Client CPU per call for ``n`` calls of each kind: both clients, 1 and 16 at a time."""
    clients = (("mailpipe (msgraph-sdk)", _through_mailpipe), ("plain httpx", _through_httpx))
    with tempfile.TemporaryDirectory(prefix="mailpipe-bench-") as tmp:
        emulator = Emulator(Path(tmp), latency_s=0.0, sent_items_delay_s=SENT_ITEMS_DELAY_S)
        try:
            emulator.configure(mailbox_max_concurrency=None, mailbox_requests_per_window=None)
            runs: dict[str, dict[str, Any]] = {}
            for concurrency in (1, 16):
                for label, run in clients:
                    monitor = Monitor({"emulator": [emulator.proc.pid]}).start()
                    calls = asyncio.run(run(emulator.base_url, concurrency, n))
                    monitor.stop()
                    runs[f"{label}, {concurrency} at a time"] = {
                        "calls_each": n,
                        "client_cpu_ms_per_email": round(sum(calls.values()), 3),
                        "client_cpu_ms_per_call": calls,
                        "other_cpu_ms_per_email": {
                            name: round(seconds * 1000 / n, 2) for name, seconds in monitor.cpu_seconds().items()
                        },
                    }
        finally:
            emulator.stop()
    return {"runs": runs}
