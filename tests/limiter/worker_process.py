"""A separate OS process using the shared limiter: ``python -m tests.limiter.worker_process CONFIG``.

CONFIG is JSON: ``database_url``, ``mode`` ("calls" or "hold"), ``limits``, and for "calls"
``jobs``: a list of ``{mailbox, workers, call_s}``. "calls" prints ``ready`` once started, reads
``start_at until`` (wall clock) from stdin, runs the jobs and prints a JSON object mapping each
mailbox to its (entered, left) intervals. "hold" takes one slot of ``mailbox``, prints ``held``
and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from pipeline.db.engine import create_engine
from pipeline.limiter import SharedLimiter
from pipeline.limiter_store import LimiterStore
from pipeline.settings import load_settings
from tests.limiter.measure import run_calls


async def main(config: dict[str, Any]) -> None:
    settings = load_settings(database_url=config["database_url"], **config["limits"])
    engine = create_engine(settings)
    limiter = SharedLimiter(
        LimiterStore(engine, settings),
        settings,
        holder=f"worker-process-{config['mode']}",
        lease_ttl_s=config.get("lease_ttl_s", 30.0),
    )
    try:
        if config["mode"] == "hold":
            async with limiter.slot(config["mailbox"]):
                print("held", flush=True)
                await asyncio.sleep(3600)
        print("ready", flush=True)
        start_at, until = map(float, (await asyncio.to_thread(sys.stdin.readline)).split())
        await asyncio.sleep(max(0.0, start_at - time.time()))
        jobs = config["jobs"]
        results = await asyncio.gather(
            *(
                run_calls(
                    limiter,
                    job["mailbox"],
                    workers=job["workers"],
                    until=until,
                    call_s=job["call_s"],
                )
                for job in jobs
            )
        )
        print(
            json.dumps({job["mailbox"]: result for job, result in zip(jobs, results, strict=True)}),
            flush=True,
        )
    finally:
        await limiter.aclose()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
