"""``graph-calls``: the CPU one Graph call costs the calling process, mailpipe's client against plain httpx.

The three calls every email without attachments makes (``sendMail``, the Sent Items look-up by
correlation key, ``$value``) are made ``n`` times each, one at a time, against the emulator in its
own process: once through :class:`pipeline.graph.GraphMailer` (msgraph-sdk, kiota's middleware,
no limiter) and once with a plain ``httpx.AsyncClient``, the Celery peer's way. ``time.process_time``
of this process around each loop gives the client's CPU per call; the emulator's CPU is reported
apart. It isolates what the SDK path costs from everything else a worker does per email.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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


async def _through_mailpipe(base_url: str, keys: list[str], sent_items_delay_s: float) -> dict[str, float]:
    settings = Settings(graph_base_url=base_url, graph_static_token=TOKEN)  # type: ignore[arg-type]
    async with build_graph_client(settings) as graph, httpx.AsyncClient() as upload_http:
        mailer = GraphMailer(graph, upload_http, NoLimiter(), settings)
        result: dict[str, float] = {}
        started = time.process_time()
        for key in keys:
            await mailer.send_mail(MAILBOX, _message(key))
        result["sendMail"] = _ms_per_call(started, len(keys))
        await asyncio.sleep(sent_items_delay_s + 0.2)
        started = time.process_time()
        found = [await mailer.find_by_correlation(MAILBOX, key, "SentItems") for key in keys]
        result["find in Sent Items"] = _ms_per_call(started, len(keys))
        started = time.process_time()
        for info in found:
            assert info is not None
            await mailer.get_mime(MAILBOX, info.id)
        result["$value"] = _ms_per_call(started, len(keys))
        return result


async def _through_httpx(base_url: str, keys: list[str], sent_items_delay_s: float) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        result: dict[str, float] = {}
        started = time.process_time()
        for key in keys:
            body = send_mail_json(_message(key), save_to_sent_items=True)
            sent = await client.post(
                f"/users/{MAILBOX}/sendMail", content=body, headers={"Content-Type": "application/json"}
            )
            sent.raise_for_status()
        result["sendMail"] = _ms_per_call(started, len(keys))
        await asyncio.sleep(sent_items_delay_s + 0.2)
        started = time.process_time()
        ids = []
        for key in keys:
            params = {"$filter": correlation_filter(key), "$select": "id,internetMessageId,isDraft"}
            listed = await client.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages", params=params)
            ids.append(listed.json()["value"][0]["id"])
        result["find in Sent Items"] = _ms_per_call(started, len(keys))
        started = time.process_time()
        for message_id in ids:
            (await client.get(f"/users/{MAILBOX}/messages/{message_id}/$value")).raise_for_status()
        result["$value"] = _ms_per_call(started, len(keys))
        return result


def graph_calls(n: int) -> dict[str, Any]:
    """Client CPU per call for ``n`` calls of each kind, mailpipe's client and plain httpx."""
    delay_s = 0.2
    with tempfile.TemporaryDirectory(prefix="mailpipe-bench-") as tmp:
        emulator = Emulator(Path(tmp), latency_s=0.0, sent_items_delay_s=delay_s)
        try:
            runs: dict[str, dict[str, Any]] = {}
            for label, run in (("mailpipe (msgraph-sdk)", _through_mailpipe), ("plain httpx", _through_httpx)):
                asyncio.run(run(emulator.base_url, [f"warm-{uuid.uuid4()}" for _ in range(WARM_UP)], delay_s))
                monitor = Monitor({"emulator": [emulator.proc.pid]}).start()
                calls = asyncio.run(run(emulator.base_url, [f"k-{uuid.uuid4()}" for _ in range(n)], delay_s))
                monitor.stop()
                runs[label] = {
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
