"""The Celery peer: what a team would otherwise write. Worker: ``celery -A bench.celery_peer worker``.

``persist_and_send`` stores the email (idempotent on its key), sends it with ``sendMail`` and
queues ``backup``, which finds the Sent Items copy by the correlation property, fetches ``$value``
and stores it gzipped. acks_late + reject_on_worker_lost, autoretry with backoff, a rate limit.
"""

from __future__ import annotations

import gzip
import os
import sqlite3
import time
from typing import Any

import httpx
from celery import Celery

from pipeline.graph.mailer import correlation_filter
from pipeline.graph.message import PROP_ID

__all__ = ["app", "create_schema", "make_app", "wait_done"]

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS celery_emails (key TEXT PRIMARY KEY, mailbox TEXT, payload TEXT, "
    "status TEXT, sent_at DOUBLE PRECISION, backed_up_at DOUBLE PRECISION, mime_gz BYTEA)"
)


def make_app(broker: str) -> Celery:
    celery = Celery("bench", broker=broker)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )
    return celery


app = make_app(os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"))
_state: dict[str, Any] = {}


def _connect(target: str) -> Any:
    if target.startswith("postgresql://"):
        import psycopg  # noqa: PLC0415

        return psycopg.connect(target, autocommit=True)
    conn = sqlite3.connect(target, timeout=60, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _http() -> httpx.Client:
    """One HTTP client per worker process (created after the prefork fork)."""
    if "http" not in _state:
        _state["http"] = httpx.Client(
            base_url=os.environ["BENCH_CELERY_GRAPH"],
            timeout=60,
            headers={"Authorization": f"Bearer {os.environ['BENCH_CELERY_TOKEN']}"},
        )
    client: httpx.Client = _state["http"]
    return client


def _execute(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    target = os.environ["BENCH_CELERY_DB"]
    if "db" not in _state:
        _state["db"] = _connect(target)
    if not target.startswith("postgresql://"):
        sql = sql.replace("%s", "?").replace("BYTEA", "BLOB")
    cursor = _state["db"].execute(sql, params)
    return list(cursor.fetchall()) if cursor.description else []


def create_schema(target: str) -> None:
    conn = _connect(target)
    conn.execute(SCHEMA if target.startswith("postgresql://") else SCHEMA.replace("BYTEA", "BLOB"))
    conn.close()


class RetryableError(Exception):
    """A 429/5xx from Graph: Celery retries with backoff."""


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"{response.status_code} {response.text[:200]}")
    response.raise_for_status()
    return response


_RETRY: dict[str, Any] = {
    "autoretry_for": (RetryableError, httpx.TransportError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "max_retries": 8,
    "acks_late": True,
    "reject_on_worker_lost": True,
}


@app.task(name="bench.persist_and_send", rate_limit="2000/s", **_RETRY)
def persist_and_send(email: dict[str, Any]) -> None:
    import json  # noqa: PLC0415

    key, mailbox = email["publisher_message_id"], email["from"]
    _execute(
        "INSERT INTO celery_emails (key, mailbox, payload, status) VALUES (%s, %s, %s, 'received') "
        "ON CONFLICT (key) DO NOTHING",
        (key, mailbox, json.dumps(email)),
    )
    if _execute("SELECT status FROM celery_emails WHERE key = %s", (key,))[0][0] != "received":
        return  # a redelivery of an email already sent: at most once per key, as far as Celery allows
    message = {
        "subject": email["subject"],
        "body": email["body"],
        "toRecipients": [{"emailAddress": {"address": a}} for a in email["to"]],
        "internetMessageHeaders": [{"name": "x-mailpipe-correlation", "value": key}],
        "singleValueExtendedProperties": [{"id": PROP_ID, "value": key}],
    }
    _check(_http().post(f"/users/{mailbox}/sendMail", json={"message": message, "saveToSentItems": True}))
    _execute("UPDATE celery_emails SET status = 'sent', sent_at = %s WHERE key = %s", (time.time(), key))
    backup.delay(key, mailbox)


@app.task(name="bench.backup", rate_limit="2000/s", **_RETRY)
def backup(key: str, mailbox: str) -> None:
    http = _http()
    found = _check(
        http.get(
            f"/users/{mailbox}/mailFolders/SentItems/messages",
            params={"$filter": correlation_filter(key), "$select": "id"},
        )
    ).json()["value"]
    if not found:
        raise RetryableError("not in Sent Items yet")
    mime = _check(http.get(f"/users/{mailbox}/messages/{found[0]['id']}/$value")).content
    _execute(
        "UPDATE celery_emails SET status = 'backed_up', backed_up_at = %s, mime_gz = %s WHERE key = %s",
        (time.time(), gzip.compress(mime), key),
    )


def wait_done(target: str, n: int, timeout_s: float) -> dict[str, Any]:
    conn = _connect(target)
    deadline = time.monotonic() + timeout_s
    row: Any = (0, 0, 0.0, 0.0)
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(sent_at), count(backed_up_at), max(sent_at), max(backed_up_at) FROM celery_emails"
        ).fetchone()
        if row[1] >= n:
            break
        time.sleep(0.5)
    conn.close()
    return {"sent": row[0], "backed_up": row[1], "last_sent": row[2] or 0.0, "last_backed_up": row[3] or 0.0}
