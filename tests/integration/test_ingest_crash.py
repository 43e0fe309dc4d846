"""SIGKILL the ingest process while SendEmail streams in: nothing lost, nothing stored twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import func, select

from pipeline.db.models import IncomingEmail
from pipeline.settings import Settings
from tests.processes import RoleProcess
from tests.support import Publisher, count, engine_for, sample_email, wait_until

TOTAL = 1500
REPLIES = "publisher.replies"


async def test_sigkilled_ingest_loses_no_email_and_stores_none_twice(
    amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(amqp_url=amqp_url, database_url=database_url)
    engine = engine_for(settings)
    ingest = RoleProcess(["ingest"], {"amqp_url": amqp_url, "database_url": database_url}, tmp_path / "ingest.log")
    kills = 0
    async with Publisher(amqp_url) as publisher:
        await publisher.declare_queue(REPLIES)
        ingest.start()
        await publisher.wait_for_consumer("mail.ingest")

        async def publish_all() -> None:
            bodies = [sample_email(n) for n in range(TOTAL)]
            for start in range(0, TOTAL, 50):
                await publisher.publish_many(bodies[start : start + 50], reply_to=REPLIES)
                await asyncio.sleep(0.05)

        publishing = asyncio.create_task(publish_all())
        # Kill the consumer three times while messages stream in, each time once it has made
        # progress, and start it again.
        for _ in range(3):
            before = await count(engine, IncomingEmail)
            await wait_until(lambda b=before: _more_than(engine, b + 100), timeout_s=90, what="ingest progress")
            ingest.kill()
            kills += 1
            ingest.start()
        assert not publishing.done() or publishing.exception() is None
        await publishing
        await wait_until(lambda: _at_least(engine, TOTAL), timeout_s=180, what="every email stored")
        await asyncio.sleep(1.0)  # let any redelivered duplicate arrive and be dropped
        ingest.stop()
        replies = await publisher.drain(REPLIES)

    assert kills == 3
    async with engine.connect() as conn:
        rows = await conn.scalar(select(func.count()).select_from(IncomingEmail))
        distinct = await conn.scalar(select(func.count(func.distinct(IncomingEmail.publisher_message_id))))
    assert rows == TOTAL
    assert distinct == TOTAL
    receipted = {json.loads(m.body)["publisher_message_id"] for m in replies}
    assert receipted == {f"msg-{n}" for n in range(TOTAL)}
    # A crash between publishing a receipt and acking can repeat it, always with the same id.
    by_key: dict[str, set[str]] = {}
    for message in replies:
        by_key.setdefault(json.loads(message.body)["publisher_message_id"], set()).add(str(message.message_id))
    assert all(len(ids) == 1 for ids in by_key.values())
    print(f"\nreceipts: {len(replies)} for {TOTAL} emails after {kills} SIGKILLs")
    await engine.dispose()


async def _more_than(engine, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await count(engine, IncomingEmail) > n


async def _at_least(engine, n: int) -> bool:  # type: ignore[no-untyped-def]
    return await count(engine, IncomingEmail) >= n
