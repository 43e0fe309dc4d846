"""Failure paths end to end: real RabbitMQ, a real database, the Graph emulator over HTTP.

What is measured is where the mail leaves: the emulator counts every send by correlation key,
so "sent once", "never sent" and "no duplicate" are read from Graph's side, not from our tables.
The faults are Graph's own answers (403, 503, 504 after a send, 429) produced by the emulator;
nothing in mailpipe is replaced.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
from sqlalchemy import func, select

from pipeline.context import AppContext
from pipeline.db.models import (
    DeadLetter,
    EmailBackup,
    EmailEvent,
    EmailStatus,
    IncomingEmail,
    SentEmail,
    WorkerReceipt,
)
from tests.processes import ROOT, role_env
from tests.support import EMULATOR_TOKEN, Publisher, pipeline_settings, running, sample_email, wait_until

LIFECYCLE_QUEUE = "test.lifecycle"
TERMINAL = (EmailStatus.BACKED_UP, EmailStatus.FAILED)


async def emulator_stats(emulator: Any) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{emulator.root_url}/_emulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


async def listen_to_lifecycle(publisher: Publisher) -> None:
    """Bind a queue of our own to every ``email.*`` event on ``mail.events`` (as a subscriber would)."""
    queue = await publisher.declare_queue(LIFECYCLE_QUEUE)
    await queue.bind("mail.events", routing_key="email.#")


async def emails_by_key(ctx: AppContext) -> dict[str, IncomingEmail]:
    async with ctx.sessions() as session:
        rows = (await session.scalars(select(IncomingEmail))).all()
    return {row.publisher_message_id: row for row in rows}


async def settled_count(ctx: AppContext) -> int:
    async with ctx.sessions() as session:
        done = await session.scalar(select(func.count()).where(IncomingEmail.status.in_(TERMINAL)))
    return int(done or 0)


class Collected:
    """Messages drained from a queue so far; ``until`` keeps draining until a condition holds."""

    def __init__(self, publisher: Publisher, queue_name: str) -> None:
        self._publisher = publisher
        self._queue_name = queue_name
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def until(
        self, condition: Callable[[list[aio_pika.abc.AbstractIncomingMessage]], bool], *, what: str
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        async def drained_enough() -> bool:
            self.messages += await self._publisher.drain(self._queue_name, idle_s=0.2)
            return condition(self.messages)

        await wait_until(drained_enough, timeout_s=30, what=what)
        return self.messages


def lifecycle(messages: list[aio_pika.abc.AbstractIncomingMessage], event: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m.body) for m in messages if m.routing_key == f"email.{event}"]
    return [b for b in bodies if b["event"] == event]


# --- 1. a permanent refusal -------------------------------------------------------------------

OUTSIDER = "outsider@contoso.example"  # a mailbox the app's access policy does not cover


async def test_permanent_graph_refusal_dead_letters_on_the_first_attempt_and_the_rest_are_sent_once(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    # Graph answers every call for OUTSIDER with 403 ErrorAccessDenied (an application access
    # policy that leaves the mailbox out): a refusal no retry can change.
    emulator.emulator.update_config({"denied_mailboxes": [OUTSIDER]})
    settings = pipeline_settings(amqp_url, database_url, emulator)
    note = base64.b64encode(b"attached note").decode()
    refused = {
        "refused-plain": sample_email(100, publisher_message_id="refused-plain", **{"from": OUTSIDER}),
        "refused-file": sample_email(
            101,
            publisher_message_id="refused-file",
            attachments=[{"name": "note.txt", "size": 13, "contentBytes": note}],
            **{"from": OUTSIDER},
        ),
    }
    valid = [sample_email(n) for n in range(8)]
    valid += [
        sample_email(n, attachments=[{"name": "note.txt", "size": 13, "contentBytes": note}]) for n in range(8, 10)
    ]
    # The refused emails are in the middle of the batch, among valid ones for the same consumers.
    batch = [*valid[:5], *refused.values(), *valid[5:]]
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await listen_to_lifecycle(publisher)
        await publisher.publish_many(batch)
        await wait_until(lambda: _settled(ctx, len(batch)), timeout_s=90, what="every email settled")

        dead_letters = await Collected(publisher, "mail.dead-letter").until(
            lambda ms: len(ms) >= 2, what="both refused emails in mail.dead-letter"
        )
        events = await Collected(publisher, LIFECYCLE_QUEUE).until(
            lambda ms: len(lifecycle(ms, "dead-lettered")) >= 2, what="two email.dead-lettered events"
        )
        # The consumers are still consuming after the refusals.
        await publisher.publish(sample_email(500))
        await wait_until(lambda: _settled(ctx, len(batch) + 1), timeout_s=60, what="an email after the refusals")

        rows = await emails_by_key(ctx)
        async with ctx.sessions() as session:
            dlq = {d.publisher_message_id: d for d in await session.scalars(select(DeadLetter))}
            timeline = (await session.execute(select(EmailEvent.publisher_message_id, EmailEvent.event))).all()
            receipts = (await session.execute(select(WorkerReceipt.incoming_email_id, WorkerReceipt.attempt))).all()
    stats = await emulator_stats(emulator)
    sends = stats["sends_by_correlation"]

    # The refused emails: failed on attempt 1, one dlq row each with reason, step and error.
    assert set(dlq) == set(refused)
    for key, route in (("refused-plain", "no-attachment"), ("refused-file", "attachment")):
        email = rows[key]
        assert (email.status, email.attempt_count) == (EmailStatus.FAILED, 1), (key, email.status, email.last_error)
        assert email.last_error is not None and "HTTP 403 ErrorAccessDenied" in email.last_error
        dead = dlq[key]
        assert (dead.reason, dead.step, dead.attempts) == ("graph-rejected", f"send:{route}", 1)
        assert (dead.incoming_email_id, dead.mailbox) == (email.id, OUTSIDER)
        assert "HTTP 403 ErrorAccessDenied" in dead.last_error
        assert json.loads(dead.raw_body or "")["publisher_message_id"] == key
        assert [a for e, a in receipts if e == email.id] == [1], "taken once, never retried"
        assert [ev for k, ev in timeline if k == key].count("dead_lettered") == 1
        assert email.correlation_key not in sends, "Graph sent nothing for it"
    # Each refused email cost exactly one Graph call: no retry anywhere (ours or the SDK's).
    assert stats["mailboxes"][OUTSIDER]["requests"] == 2
    assert stats["mailboxes"][OUTSIDER]["sends"] == 0

    # The broker's copies carry the story in readable headers.
    assert len(dead_letters) == 2
    by_key = {str(m.headers["mailpipe-publisher-message-id"]): m for m in dead_letters}
    assert set(by_key) == set(refused)
    for key, message in by_key.items():
        headers = message.headers
        route = "attachment" if key == "refused-file" else "no-attachment"
        assert headers["mailpipe-reason"] == "graph-rejected"
        assert headers["mailpipe-step"] == f"send:{route}"
        assert headers["mailpipe-attempts"] == 1
        assert isinstance(headers["mailpipe-error"], str) and "HTTP 403 ErrorAccessDenied" in headers["mailpipe-error"]
        assert headers["mailpipe-incoming-email-id"] == str(rows[key].id)
        assert headers["mailpipe-mailbox"] == OUTSIDER
        assert headers["mailpipe-original-exchange"] == "mail.dispatch"
        assert headers["mailpipe-original-routing-key"] == route
        assert json.loads(message.body)["publisher_message_id"] == key

    # And subscribers heard about it on mail.events.
    announced = {e["publisher_message_id"]: e for e in lifecycle(events, "dead-lettered")}
    assert set(announced) == set(refused)
    for key, event in announced.items():
        assert event["incoming_email_id"] == str(rows[key].id)
        assert event["detail"]["reason"] == "graph-rejected"
        assert event["detail"]["attempts"] == 1

    # Every valid email (and the one published afterwards) was sent exactly once and backed up.
    others = {k: r for k, r in rows.items() if k not in refused}
    assert len(others) == len(valid) + 1
    assert {k: r.status for k, r in others.items()} == dict.fromkeys(others, EmailStatus.BACKED_UP)
    assert {sends.get(r.correlation_key) for r in others.values()} == {1}
    assert len(sends) == len(others)


async def _settled(ctx: AppContext, total: int) -> bool:
    return await settled_count(ctx) >= total


# --- 2. transient errors until the attempts run out, then a replay ----------------------------


async def mailpipe_cli(*args: str, amqp_url: str, database_url: str) -> tuple[int, str]:
    """Run ``mailpipe ARGS`` as its own process, as an operator would; returns (status, output)."""
    env = role_env({"amqp_url": amqp_url, "database_url": database_url})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_transient_errors_exhaust_attempts_then_dead_letter_and_a_replay_sends_once(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    emulator.emulator.update_config({"fail_503_rate": 1.0})  # Graph is down: 503 ErrorServerBusy
    settings = pipeline_settings(
        amqp_url, database_url, emulator, send_max_attempts=3, retry_base_delay_s=0.1, retry_max_delay_s=0.5
    )
    cli = {"amqp_url": amqp_url, "database_url": database_url}
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish(sample_email(1))
        await wait_until(lambda: _status_is(ctx, "msg-1", EmailStatus.FAILED), timeout_s=60, what="dead-lettered")
        email = (await emails_by_key(ctx))["msg-1"]
        async with ctx.sessions() as session:
            dead = (await session.scalars(select(DeadLetter))).one()
            attempts = sorted(
                await session.scalars(select(WorkerReceipt.attempt).where(WorkerReceipt.incoming_email_id == email.id))
            )
        retries = await _events(ctx, email.id, "retry_scheduled")
        down = await emulator_stats(emulator)

        # Exactly three attempts, each one Graph call answered 503, then the dead letter.
        assert (email.status, email.attempt_count) == (EmailStatus.FAILED, 3)
        assert attempts == [1, 2, 3]
        assert len(retries) == 2
        assert (dead.incoming_email_id, dead.attempts, dead.step) == (email.id, 3, "send:no-attachment")
        assert dead.reason == "attempts-exhausted:graph-503"
        assert "HTTP 503 ErrorServerBusy" in dead.last_error
        assert email.last_error is not None and "503" in email.last_error
        assert down["sends_by_correlation"] == {}
        assert down["totals"]["requests"] == down["totals"]["faults_503"] == 3

        # Graph is back; the operator looks at the dead letter and replays it.
        emulator.emulator.update_config({"fail_503_rate": 0.0})
        status, listing = await mailpipe_cli("dlq", "list", **cli)
        assert status == 0, listing
        assert "attempts-exhausted:graph-503" in listing and "msg-1" in listing
        status, output = await mailpipe_cli("dlq", "replay", "--id", str(dead.id), **cli)
        assert status == 0, output
        assert "replayed 1, refused 0" in output
        await wait_until(lambda: _status_is(ctx, "msg-1", EmailStatus.BACKED_UP), timeout_s=60, what="backed up")

        sent = await emulator_stats(emulator)
        assert sent["sends_by_correlation"] == {email.correlation_key: 1}
        replayed = await _events(ctx, email.id, "dlq_replayed")
        assert [e.detail for e in replayed] == [{"dlq_id": dead.id, "action": "retry"}]
        # The timeline: dead-lettered, replayed, then sent and backed up after the replay.
        timeline = [e.event for e in await _events(ctx, email.id)]
        assert timeline.index("dead_lettered") < timeline.index("dlq_replayed") < timeline.index("sent")
        assert timeline.count("sent") == 1 and timeline.count("backed_up") == 1

        # A second replay (by id, or by the same filter) changes nothing and sends nothing.
        status, again = await mailpipe_cli("dlq", "replay", "--id", str(dead.id), **cli)
        assert status == 1, again
        assert "already replayed" in again and "replayed 0, refused 1" in again
        status, by_filter = await mailpipe_cli("dlq", "replay", "--reason", dead.reason, **cli)
        assert status == 0, by_filter
        assert "replayed 0, refused 0" in by_filter
        after = (await emails_by_key(ctx))["msg-1"]
        async with ctx.sessions() as session:
            backups = await session.scalar(
                select(func.count()).select_from(EmailBackup).where(EmailBackup.incoming_email_id == email.id)
            )
            sent_rows = await session.scalar(
                select(func.count()).select_from(SentEmail).where(SentEmail.incoming_email_id == email.id)
            )
        replays = await _events(ctx, email.id, "dlq_replayed")
    final = await emulator_stats(emulator)
    assert (after.status, after.attempt_count) == (EmailStatus.BACKED_UP, 1)
    assert (backups, sent_rows, len(replays)) == (1, 1, 1)
    assert final["sends_by_correlation"] == {email.correlation_key: 1}


async def _status_is(ctx: AppContext, key: str, status: str) -> bool:
    row = (await emails_by_key(ctx)).get(key)
    return row is not None and row.status == status


async def _events(ctx: AppContext, email_id: Any, event: str | None = None) -> list[EmailEvent]:
    async with ctx.sessions() as session:
        stmt = select(EmailEvent).where(EmailEvent.incoming_email_id == email_id).order_by(EmailEvent.id)
        if event is not None:
            stmt = stmt.where(EmailEvent.event == event)
        return list((await session.scalars(stmt)).all())


# --- 2b. the attempts run out while a send's outcome is unknown -------------------------------


async def test_an_email_dead_lettered_after_a_504_says_it_may_have_been_sent_and_a_replay_does_not_resend_it(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    # Attempt 1: sendMail goes out and Graph answers 504. Attempt 2 must look in Sent Items
    # first, but Graph throttles the look-up (one call per 3 s for the mailbox): the attempts run
    # out on a 429 while the first send's outcome is still unknown. The dead letter must not read
    # as "never sent", and the replay must find the copy instead of sending it again.
    emulator.emulator.update_config(
        {
            "fail_504_after_send_rate": 1.0,
            "mailbox_requests_per_window": 1,
            "mailbox_window_s": 3.0,
            "throttle_retry_after_s": 0.1,
        }
    )
    settings = pipeline_settings(
        amqp_url, database_url, emulator, send_max_attempts=2, retry_base_delay_s=0.1, retry_max_delay_s=0.2
    )
    cli = {"amqp_url": amqp_url, "database_url": database_url}
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish(sample_email(7))
        await wait_until(lambda: _status_is(ctx, "msg-7", EmailStatus.FAILED), timeout_s=60, what="dead-lettered")
        email = (await emails_by_key(ctx))["msg-7"]
        async with ctx.sessions() as session:
            dead = (await session.scalars(select(DeadLetter))).one()
        stats = await emulator_stats(emulator)
        assert stats["sends_by_correlation"] == {email.correlation_key: 1}, "the 504 hid a send that happened"
        assert (stats["totals"]["faults_504"], stats["totals"]["throttled_rate"]) == (1, 1)
        assert (email.attempt_count, dead.attempts, dead.reason) == (2, 2, "attempts-exhausted:graph-throttled")
        assert "HTTP 429 ApplicationThrottled" in dead.last_error
        assert "may have been sent" in dead.last_error, dead.last_error
        assert email.last_error == dead.last_error

        # Graph stops throttling and answering 504, and its 429's Retry-After (at most the 3 s
        # window) runs out; then the operator replays the dead letter.
        emulator.emulator.update_config({"fail_504_after_send_rate": 0.0, "mailbox_requests_per_window": None})
        await asyncio.sleep(3.0)
        status, output = await mailpipe_cli("dlq", "replay", "--id", str(dead.id), **cli)
        assert status == 0, output
        await wait_until(lambda: _status_is(ctx, "msg-7", EmailStatus.BACKED_UP), timeout_s=60, what="backed up")
        async with ctx.sessions() as session:
            sent = (await session.scalars(select(SentEmail))).one()
    final = await emulator_stats(emulator)
    assert final["sends_by_correlation"] == {email.correlation_key: 1}, "replayed without a second send"
    assert (sent.incoming_email_id, sent.method, sent.recovered) == (email.id, "recovered", True)


# --- 3. a 429 storm with 503 bursts and 504s after sends ------------------------------------

STORM_EMAILS = 200
STORM_MAILBOXES = 3


async def test_429_storm_and_503_bursts_every_email_is_sent_once_or_dead_lettered_with_its_reason(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    # Graph throttles hard: 6 calls per sliding second and 2 at a time per mailbox, a 0.5 s
    # Retry-After; about one call in seven is a 503 (Retry-After: 1, which pauses the mailbox and
    # sets the pace: ~60 s here) and one accepted send in twenty answers 504 after it went out.
    # mailpipe's own limiter is set looser (20/s, burst 10, 4 at a time), so Graph's 429s are
    # real and mailpipe must live with them.
    emulator.emulator.update_config(
        {
            "mailbox_requests_per_window": 6,
            "mailbox_window_s": 1.0,
            "mailbox_max_concurrency": 2,
            "throttle_retry_after_s": 0.5,
            "fail_503_rate": 0.15,
            "fail_504_after_send_rate": 0.05,
        }
    )
    settings = pipeline_settings(
        amqp_url, database_url, emulator, mailbox_rate_per_s=20.0, mailbox_burst=10, mailbox_max_concurrency=4
    )
    emails = [sample_email(n, **{"from": f"box{n % STORM_MAILBOXES}@contoso.example"}) for n in range(STORM_EMAILS)]
    started = time.monotonic()
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish_many(emails)
        await wait_until(lambda: _settled(ctx, STORM_EMAILS), timeout_s=240, interval_s=1.0, what="every email settled")
        elapsed = time.monotonic() - started
        rows = await emails_by_key(ctx)
        async with ctx.sessions() as session:
            dead = (await session.scalars(select(DeadLetter))).all()
            sent_ids = set(await session.scalars(select(SentEmail.incoming_email_id)))
            backed_up_ids = set(await session.scalars(select(EmailBackup.incoming_email_id)))
    stats = await emulator_stats(emulator)
    sends: dict[str, int] = stats["sends_by_correlation"]
    totals = stats["totals"]
    throttled = totals["throttled_rate"] + totals["throttled_concurrency"] + totals["throttled_early"]
    failed = {k: r for k, r in rows.items() if r.status == EmailStatus.FAILED}
    reasons = Counter(f"{letter.step} {letter.reason}" for letter in dead)
    print(
        f"\n{STORM_EMAILS} emails over {STORM_MAILBOXES} mailboxes settled in {elapsed:.1f} s: "
        f"{STORM_EMAILS - len(failed)} backed up, {len(failed)} dead-lettered {dict(reasons)}; Graph answered "
        f"{throttled} x 429 (rate {totals['throttled_rate']}, concurrency {totals['throttled_concurrency']}, "
        f"early {totals['throttled_early']}), {totals['faults_503']} x 503, {totals['faults_504']} x 504 after a send, "
        f"{totals['requests']} requests, {totals['sends']} sends, early calls {totals['early_calls']}"
    )

    # The storm really happened, or this test proves nothing.
    assert throttled > 0 and totals["throttled_rate"] > 0
    assert totals["faults_503"] > 0
    assert totals["faults_504"] > 0
    # Nothing lost: every published email is there and settled.
    assert set(rows) == {e["publisher_message_id"] for e in emails}
    assert {r.status for r in rows.values()} <= set(TERMINAL)
    # Zero duplicates, and nothing Graph sent that we do not know about.
    assert all(count == 1 for count in sends.values()), {k: v for k, v in sends.items() if v != 1}
    assert set(sends) <= {r.correlation_key for r in rows.values()}
    assert totals["sends"] == len(sends)
    # Backed up: sent exactly once, archived once.
    for row in rows.values():
        if row.status == EmailStatus.BACKED_UP:
            assert sends.get(row.correlation_key) == 1, row.publisher_message_id
            assert row.id in sent_ids and row.id in backed_up_ids
    # Dead-lettered: one dlq row naming its reason, step and last error; sent at most once.
    dead_by_email = {d.incoming_email_id: d for d in dead}
    assert len(dead_by_email) == len(dead) == len(failed)
    for row in failed.values():
        letter = dead_by_email[row.id]
        assert letter.reason and letter.step.startswith(("send:", "backup")) and letter.last_error
        assert letter.attempts >= 1
        if letter.step == "backup":
            assert sends.get(row.correlation_key) == 1 and row.id in sent_ids
        elif sends.get(row.correlation_key):
            # Gone out on a try answered 504; the dead letter must say so, not read as "never sent".
            assert "may have" in letter.last_error, letter.last_error


# --- 4. an address whose display name looks like another address ----------------------------


async def sent_items(emulator: Any, mailbox: str) -> list[dict[str, Any]]:
    """The mailbox's Sent Items as Graph lists them (over HTTP, with the test token)."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {EMULATOR_TOKEN}"}) as client:
        response = await client.get(
            f"{emulator.base_url}/users/{mailbox}/mailFolders/SentItems/messages",
            params={"$select": "subject,from,toRecipients,ccRecipients"},
        )
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["value"]
        return items


def _recipients(item: dict[str, Any], field: str) -> list[tuple[str, str | None]]:
    return [(r["emailAddress"]["address"], r["emailAddress"].get("name")) for r in item.get(field) or []]


async def test_display_names_with_commas_or_addresses_are_sent_to_their_own_address_not_stuck_or_misrouted(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    # "Doe, Jane" is how many systems write names; the display name is often customer data.
    # Stored unquoted, it parsed back as another address at send time: the first email looped
    # through redeliveries, the second went to the address written in the *name*.
    settings = pipeline_settings(amqp_url, database_url, emulator)
    emails = [
        sample_email(
            1,
            to=['"Doe, Jane" <jane@fabrikam.example>'],
            cc=['"billing@fabrikam.example" <ap@fabrikam.example>'],
            **{"from": '"Contoso, Billing" <sender@contoso.example>'},
        ),
        sample_email(2, to=['"<attacker@evil.example>" <victim@fabrikam.example>']),
    ]
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish_many(emails)
        await wait_until(lambda: _settled(ctx, len(emails)), timeout_s=60, what="both emails settled")
        rows = await emails_by_key(ctx)
    assert {k: (r.status, r.attempt_count) for k, r in rows.items()} == {
        "msg-1": (EmailStatus.BACKED_UP, 1),
        "msg-2": (EmailStatus.BACKED_UP, 1),
    }
    assert rows["msg-1"].mailbox == "sender@contoso.example"
    stats = await emulator_stats(emulator)
    assert set(stats["mailboxes"]) == {"sender@contoso.example"}
    assert stats["sends_by_correlation"] == {r.correlation_key: 1 for r in rows.values()}
    sent = {item["subject"]: item for item in await sent_items(emulator, "sender@contoso.example")}
    assert _recipients(sent["Invoice 1"], "toRecipients") == [("jane@fabrikam.example", "Doe, Jane")]
    assert _recipients(sent["Invoice 1"], "ccRecipients") == [("ap@fabrikam.example", "billing@fabrikam.example")]
    assert sent["Invoice 1"]["from"]["emailAddress"] == {
        "address": "sender@contoso.example",
        "name": "Contoso, Billing",
    }
    assert _recipients(sent["Invoice 2"], "toRecipients") == [("victim@fabrikam.example", "<attacker@evil.example>")]
