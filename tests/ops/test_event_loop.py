"""``mailpipe run`` on each event loop: the role starts on the loop it was told and does its work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.db.models import IncomingEmail
from pipeline.settings import Settings
from tests.processes import RoleProcess
from tests.support import Publisher, count, engine_for, sample_email, wait_until

EMAILS = 20


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_ingest_runs_on_the_chosen_event_loop(
    amqp_url: str, database_url: str, event_loop: str, tmp_path: Path
) -> None:
    engine = engine_for(Settings(amqp_url=amqp_url, database_url=database_url))
    settings = {"amqp_url": amqp_url, "database_url": database_url, "event_loop": event_loop}
    ingest = RoleProcess(["ingest"], settings, tmp_path / "ingest.log")
    try:
        async with Publisher(amqp_url) as publisher:
            ingest.start()
            await publisher.wait_for_consumer("mail.ingest")
            await publisher.publish_many([sample_email(n) for n in range(EMAILS)])

            async def stored() -> bool:
                return await count(engine, IncomingEmail) == EMAILS

            await wait_until(stored, timeout_s=60, what="every email stored")
    finally:
        ingest.stop()
        await engine.dispose()
    assert ingest.process is not None and ingest.process.returncode == 0
    lines = [json.loads(line) for line in ingest.log_path.read_text().splitlines() if line.startswith("{")]
    ready = [line for line in lines if line.get("event") == "roles ready"]
    assert [line["event_loop"] for line in ready] == [event_loop]
