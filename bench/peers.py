"""Peers measured in the same run: the broker's floor (raw aio-pika, 4 hops) and a Celery worker."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika

from bench.infra import TOKEN, Database, Emulator, Proc, Vhost, base_env
from bench.load import emails
from bench.procmon import Monitor, broker_pids, postgres_pids

__all__ = ["celery", "floor"]

HOPS = ("floor.ingest", "floor.dispatch", "floor.send", "floor.backup")


async def _relay(url: str, n: int) -> dict[str, Any]:
    """Publisher -> ingest -> dispatch -> send -> backup: persistent, confirmed, ack after next confirm."""
    connection = await aio_pika.connect_robust(url)
    done = asyncio.Event()
    finished = 0
    setup = await connection.channel()
    for name in HOPS:
        await setup.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})

    async def hop(source: str, target: str | None) -> None:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(source)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal finished
            if target is not None:
                await channel.default_exchange.publish(
                    aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=target,
                )
            await message.ack()
            if target is None:
                finished += 1
                if finished >= n:
                    done.set()

        await queue.consume(on_message)

    for source, target in zip(HOPS, (*HOPS[1:], None), strict=True):
        await hop(source, target)
    publisher = await connection.channel(publisher_confirms=True)
    body = b"x" * 400
    start = time.monotonic()
    for i in range(0, n, 100):
        await asyncio.gather(
            *(
                publisher.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=HOPS[0],
                )
                for _ in range(min(100, n - i))
            )
        )
    publish_s = time.monotonic() - start
    await asyncio.wait_for(done.wait(), timeout=1800)
    elapsed = time.monotonic() - start
    await connection.close()
    return {
        "emails": n,
        "publish_per_s": round(n / publish_s, 1),
        "relay_per_s": round(n / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
    }


def floor(n: int) -> dict[str, Any]:
    """What the broker allows through 4 hops on this machine, with one Python process doing all hops."""
    import os  # noqa: PLC0415

    with Vhost() as vhost:
        monitor = Monitor({"relay (python)": [os.getpid()], "broker": broker_pids()}).start()
        result = asyncio.run(_relay(vhost.url, n))
        monitor.stop()
        cpu = monitor.cpu_seconds()
        result.update(
            cpu_s=cpu,
            cpu_ms_per_email={k: round(v * 1000 / n, 2) for k, v in cpu.items()},
            peak_rss_mb=monitor.peak_rss_mb(),
            hops=len(HOPS),
            queue_type="quorum",
        )
        return result


def celery(db: str, n: int, mailboxes: int = 8, concurrency: int = 4) -> dict[str, Any]:
    """A Celery worker doing the same job (persist, send, find in Sent Items, $value, gzip, store)."""
    with (
        tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp,
        Vhost() as vhost,
        Database(db, Path(tmp)) as database,
    ):
        # Imported here: Celery is a benchmark-only dependency (the `bench` extra).
        from bench import celery_peer  # noqa: PLC0415

        emulator = Emulator(Path(tmp), 0.0, 0.0)
        try:
            emulator.configure(mailbox_max_concurrency=None, mailbox_requests_per_window=None)
            env = {
                **base_env(),
                "BENCH_CELERY_BROKER": f"amqp://guest:guest@127.0.0.1:5672/{vhost.name}",
                "BENCH_CELERY_DB": database.plain_url,
                "BENCH_CELERY_GRAPH": emulator.base_url,
                "BENCH_CELERY_TOKEN": TOKEN,
            }
            celery_peer.create_schema(database.plain_url)
            worker = Proc(
                "celery",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.celery_peer",
                    "worker",
                    "--loglevel",
                    "WARNING",
                    "--concurrency",
                    str(concurrency),
                    "--pool",
                    "prefork",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env,
                Path(tmp) / "celery.log",
            )
            try:
                time.sleep(6)  # prefork children up
                groups = {"celery": [worker.pid], "broker": broker_pids(), "emulator": [emulator.proc.pid]}
                if db == "postgresql":
                    groups["postgres"] = postgres_pids()
                app = celery_peer.make_app(env["BENCH_CELERY_BROKER"])
                run_id = uuid.uuid4().hex[:8]
                batch = emails(n, run_id, mailboxes)
                monitor = Monitor(groups).start()
                start = time.time()
                for email in batch:
                    app.send_task("bench.persist_and_send", args=[email])
                publish_s = time.time() - start
                times = celery_peer.wait_done(database.plain_url, n, timeout_s=1800)
                monitor.stop()
                log_tail = (Path(tmp) / "celery.log").read_text(errors="replace").splitlines()[-5:]
            finally:
                worker.stop()
        finally:
            emulator.stop()
    cpu = monitor.cpu_seconds()
    return {
        "emails": n,
        "concurrency": concurrency,
        "pool": "prefork",
        "publish_per_s": round(n / publish_s, 1),
        "sent_per_s": round(times["sent"] / max(times["last_sent"] - start, 1e-6), 1),
        "backed_up_per_s": round(times["backed_up"] / max(times["last_backed_up"] - start, 1e-6), 1),
        "sent": times["sent"],
        "backed_up": times["backed_up"],
        "cpu_s": cpu,
        "cpu_ms_per_email": round(cpu["celery"] * 1000 / max(times["backed_up"], 1), 2),
        "other_cpu_ms_per_email": {
            k: round(v * 1000 / max(times["backed_up"], 1), 2) for k, v in cpu.items() if k != "celery"
        },
        "peak_rss_mb": monitor.peak_rss_mb(),
        "worker_log_tail": log_tail,
    }
