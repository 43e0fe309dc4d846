"""Ingest against the real RabbitMQ and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

from sqlalchemy import select

from pipeline.db.models import DeadLetter, EmailEvent, IncomingEmail
from pipeline.settings import Settings
from pipeline.steps.ingest import ingest
from tests.support import Publisher, count, engine_for, running, sample_email, wait_until

REPLY_QUEUE = "publisher.replies"


def invalid_bodies() -> list[bytes]:
    base = sample_email(0)
    cases: list[bytes] = []
    for n in range(10):
        cases.append(b"{not json " + str(n).encode())
        cases.append(json.dumps({**base, "publisher_message_id": f"bad-addr-{n}", "to": ["not-an-address"]}).encode())
        cases.append(json.dumps({**base, "publisher_message_id": f"crlf-{n}", "subject": "Hi\r\nBcc: x@y.z"}).encode())
        cases.append(
            json.dumps(
                {**base, "publisher_message_id": f"big-{n}", "body": {"contentType": "text", "content": "x" * 70_000}}
            ).encode()
        )
        cases.append(json.dumps({**base, "publisher_message_id": f"norcpt-{n}", "to": []}).encode())
    return cases


async def test_thousand_emails_with_duplicates_and_invalid_ones_are_stored_once_and_receipted_once(
    amqp_url: str, database_url: str
) -> None:
    settings = Settings(amqp_url=amqp_url, database_url=database_url, max_message_bytes=65_536)
    engine = engine_for(settings)
    async with running(settings, ["ingest"]), Publisher(amqp_url) as publisher:
        await publisher.declare_queue(REPLY_QUEUE)
        valid = [sample_email(n) for n in range(1000)]
        await publisher.publish_many(valid, reply_to=REPLY_QUEUE)
        await publisher.publish_many(valid[:200], reply_to=REPLY_QUEUE)
        await publisher.publish_many(invalid_bodies(), reply_to=REPLY_QUEUE)

        await wait_until(lambda: _settled(engine), timeout_s=120, what="1000 rows and 50 dead letters")
        # The consumer is still consuming after all that bad input.
        await publisher.publish(sample_email(5000), reply_to=REPLY_QUEUE)
        await wait_until(lambda: _has(engine, "msg-5000"), what="a valid email after the bad ones")

        replies = await publisher.drain(REPLY_QUEUE)
        dead = await publisher.drain("mail.dead-letter")

    assert await count(engine, IncomingEmail) == 1001
    receipts = [json.loads(m.body) for m in replies]
    assert len(receipts) == 1001
    assert len({r["publisher_message_id"] for r in receipts}) == 1001
    assert all(m.correlation_id == json.loads(m.body)["publisher_message_id"] for m in replies)
    assert all(m.message_id == f"receipt:{json.loads(m.body)['incoming_email_id']}" for m in replies)
    assert len(dead) == 50
    reasons = {m.headers["mailpipe-reason"] for m in dead}
    assert reasons == {"not-json", "schema", "too-large"}
    for message in dead:
        assert message.headers["mailpipe-step"] == "ingest"
        assert len(str(message.headers["mailpipe-error"])) > 10
    crlf = [m for m in dead if b"crlf-" in m.body]
    assert all("CR or LF" in str(m.headers["mailpipe-error"]) for m in crlf)
    assert await count(engine, DeadLetter) == 50
    assert await count(engine, EmailEvent, EmailEvent.event == "received") == 1001
    await engine.dispose()


async def _settled(engine) -> bool:  # type: ignore[no-untyped-def]
    return await count(engine, IncomingEmail) >= 1000 and await count(engine, DeadLetter) >= 50


async def _has(engine, key: str) -> bool:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return (
            await conn.scalar(select(IncomingEmail.id).where(IncomingEmail.publisher_message_id == key))
        ) is not None


async def test_a_redelivery_sends_the_receipt_again_with_its_id_and_a_republished_copy_does_not(
    amqp_url: str, database_url: str
) -> None:
    """The one repeat the publisher contract allows: the broker redelivers a stored email."""
    settings = Settings(amqp_url=amqp_url, database_url=database_url)
    body = json.dumps(sample_email(7)).encode()
    async with running(settings, ["ingest"]) as ctx, Publisher(amqp_url) as publisher:
        await publisher.declare_queue(REPLY_QUEUE)
        first = await ingest(ctx, body, reply_to=REPLY_QUEUE, redelivered=False)
        copy = await ingest(ctx, body, reply_to=REPLY_QUEUE, redelivered=False)  # published twice
        redelivery = await ingest(ctx, body, reply_to=REPLY_QUEUE, redelivered=True)  # crashed before the ack
        replies = await publisher.drain(REPLY_QUEUE)

    assert (first.created, copy.created, redelivery.created) == (True, False, False)
    assert first.id == copy.id == redelivery.id
    assert [m.message_id for m in replies] == [f"receipt:{first.id}"] * 2
