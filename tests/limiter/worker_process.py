"""A separate OS process using the shared limiter: ``python -m tests.limiter.worker_process CONFIG``.

CONFIG is JSON: ``database_url``, ``mailbox``, ``mode`` ("calls" or "hold"), limits, and for
"calls" ``start_at``/``until`` (wall clock), ``workers``, ``call_s``. "calls" prints the JSON
list of (entered, left) intervals; "hold" takes one slot, prints ``held`` and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from pipeline.db.engine import create_engine, create_sessionmaker
from pipeline.limiter import SharedLimiter
from pipeline.limiter_store import LimiterStore
from pipeline.settings import load_settings
from tests.limiter.measure import run_calls


async def main(config: dict[str, Any]) -> None:
    settings = load_settings(database_url=config["database_url"], **config["limits"])
    engine = create_engine(settings)
    limiter = SharedLimiter(
        LimiterStore(create_sessionmaker(engine), settings),
        settings,
        holder=f"worker-process-{config['mode']}",
        lease_ttl_s=config.get("lease_ttl_s", 30.0),
    )
    try:
        if config["mode"] == "hold":
            async with limiter.slot(config["mailbox"]):
                print("held", flush=True)
                await asyncio.sleep(3600)
        await asyncio.sleep(max(0.0, config["start_at"] - time.time()))
        intervals = await run_calls(
            limiter, config["mailbox"], workers=config["workers"], until=config["until"], call_s=config["call_s"]
        )
        print(json.dumps(intervals), flush=True)
    finally:
        await limiter.aclose()
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
