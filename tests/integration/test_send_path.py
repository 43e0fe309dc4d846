"""The whole pipeline against the real broker, a real database and the Graph emulator over HTTP.

Graph is reached through the real msgraph-sdk code path; the emulator counts every send by
correlation key, so "exactly once" is measured where the mail leaves, not in our own tables.
"""

from __future__ import annotations

import base64
import random
from typing import Any

import httpx
from sqlalchemy import func, select

from pipeline.db.models import EmailBackup, IncomingEmail, SentEmail, WorkerReceipt
from pipeline.emulator import expected_file_sha256
from tests.support import Publisher, pipeline_settings, running, sample_email, wait_until

TOTAL = 500


def mixed_emails(files_url: str, rng: random.Random) -> tuple[list[dict[str, Any]], dict[str, list[tuple[int, int]]]]:
    """70% plain, 30% with files: a few 5-20 MB by URL, the rest small inline or by URL."""
    emails, big_files = [], {}
    for n in range(TOTAL):
        email = sample_email(n, **{"from": f"sender{n % 5}@contoso.example"})
        if n % 10 < 3:
            if n % 50 == 0:
                size, seed = rng.randint(5, 20) * 1024 * 1024 + n, n
                email["attachments"] = [{"name": f"big-{n}.bin", "size": size, "urlOrId": f"{files_url}/{size}/{seed}"}]
                big_files[email["publisher_message_id"]] = [(size, seed)]
            elif n % 2:
                data = rng.randbytes(rng.randint(1, 60_000))
                email["attachments"] = [
                    {"name": f"note-{n}.txt", "size": len(data), "contentBytes": base64.b64encode(data).decode()}
                ]
            else:
                size = rng.randint(1, 200_000)
                email["attachments"] = [{"name": f"small-{n}.bin", "size": size, "urlOrId": f"{files_url}/{size}/{n}"}]
        emails.append(email)
    return emails, big_files


async def test_500_emails_are_sent_and_backed_up_exactly_once_despite_503s_and_504s(
    amqp_url: str, database_url: str, emulator: Any
) -> None:
    emulator.emulator.update_config(
        {"fail_503_rate": 0.05, "fail_504_after_send_rate": 0.02, "keep_attachment_bytes": False}
    )
    settings = pipeline_settings(amqp_url, database_url, emulator)
    emails, big_files = mixed_emails(f"{emulator.root_url}/_emulator/files", random.Random(3))
    async with running(settings) as ctx, Publisher(amqp_url) as publisher:
        await publisher.publish_many(emails)

        async def all_backed_up() -> bool:
            async with ctx.sessions() as session:
                done = await session.scalar(
                    select(func.count()).where(IncomingEmail.status.in_(("backed_up", "failed")))
                )
            return done == TOTAL

        await wait_until(all_backed_up, timeout_s=400, interval_s=1.0, what="every email backed up")
        async with ctx.sessions() as session:
            rows = (await session.execute(select(IncomingEmail))).scalars().all()
            pools = dict((await session.execute(select(WorkerReceipt.incoming_email_id, WorkerReceipt.pool))).all())
            backups = await session.scalar(select(func.count(func.distinct(EmailBackup.graph_message_id))))
            backup_rows = await session.scalar(select(func.count()).select_from(EmailBackup))
            sent_rows = await session.scalar(select(func.count()).select_from(SentEmail))

    stats = httpx.get(f"{emulator.root_url}/_emulator/stats").json()
    sends = stats["sends_by_correlation"]
    assert [r.status for r in rows].count("backed_up") == TOTAL, [r.last_error for r in rows if r.status != "backed_up"]
    assert {r.correlation_key for r in rows} == set(sends), "every email reached Graph"
    assert all(count == 1 for count in sends.values()), {k: v for k, v in sends.items() if v != 1}
    assert backups == backup_rows == sent_rows == TOTAL
    for row in rows:
        expected_pool = "attachment" if row.payload.get("attachments") else "no-attachment"
        assert pools[row.id] == expected_pool
    by_key = {s["correlation"]: s for s in stats["sent"]}
    for row in rows:
        if row.publisher_message_id in big_files:
            ((size, seed),) = big_files[row.publisher_message_id]
            (attachment,) = by_key[row.correlation_key]["attachments"]
            assert attachment["size"] == size
            assert attachment["sha256"] == expected_file_sha256(size, seed)
    totals = stats.get("totals", {})
    print(f"\nemulator: {totals}")
