"""GraphMailer over real HTTP against the Graph emulator, through the real msgraph-sdk pipeline.

One emulator server per module (uvicorn in a thread); each test resets its state and config
through the control endpoints and builds its own Graph client on its own event loop.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from graph_mocks import MAILBOX, RecordingLimiter

from pipeline.emulator import EmulatorConfig, RunningEmulator, expected_file_sha256, serve_in_thread
from pipeline.errors import GraphRejected, GraphUnavailable, SendOutcomeUnknown
from pipeline.graph import (
    GraphMailer,
    GraphTokenProvider,
    NoLimiter,
    OutgoingMessage,
    UploadRangeMismatch,
    build_graph_client,
)
from pipeline.settings import Settings

TOKEN = "t"
FILE_SIZE = 5 * 1024 * 1024
CHUNK = 10 * 327_680


@pytest.fixture(scope="module")
def running() -> Iterator[RunningEmulator]:
    with serve_in_thread(EmulatorConfig(static_token=TOKEN)) as server:
        yield server


@pytest.fixture
async def control(running: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    """A plain client on the emulator root, after resetting state and config."""
    async with httpx.AsyncClient(base_url=running.root_url, timeout=30) as client:
        (await client.post("/_emulator/reset")).raise_for_status()
        defaults = EmulatorConfig(static_token=TOKEN).model_dump()
        (await client.post("/_emulator/config", json=defaults)).raise_for_status()
        yield client


@pytest.fixture
def emu_settings(running: RunningEmulator) -> Settings:
    return Settings(graph_base_url=running.base_url, graph_static_token=TOKEN)  # type: ignore[arg-type]


@pytest.fixture
def emu_limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
async def emu_mailer(
    emu_settings: Settings, control: httpx.AsyncClient, emu_limiter: RecordingLimiter
) -> AsyncIterator[GraphMailer]:
    async with (
        build_graph_client(emu_settings) as graph,
        httpx.AsyncClient(timeout=30) as upload_http,
    ):
        yield GraphMailer(graph, upload_http, emu_limiter, emu_settings)


def _message(key: str) -> OutgoingMessage:
    return OutgoingMessage(
        from_address=(MAILBOX, "Sender"),
        to=[("rcpt@example.test", "Rcpt")],
        subject=f"Subject {key}",
        body_type="html",
        body_content=f"<p>Body {key}</p>",
        correlation_key=key,
    )


async def _stats(control: httpx.AsyncClient) -> dict[str, Any]:
    response = await control.get("/_emulator/stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def _key() -> str:
    return f"it-{uuid.uuid4()}"


async def test_send_mail_is_sent_exactly_once(emu_mailer: GraphMailer, control: httpx.AsyncClient) -> None:
    key = _key()

    await emu_mailer.send_mail(MAILBOX, _message(key))

    assert (await _stats(control))["sends_by_correlation"] == {key: 1}
    found = await emu_mailer.find_by_correlation(MAILBOX, key, "SentItems")
    assert found is not None
    assert found.is_draft is False


async def test_draft_large_upload_send_and_find(emu_mailer: GraphMailer, control: httpx.AsyncClient) -> None:
    """The attachments path end to end: a 5 MiB file in 3,276,800-byte chunks, bit for bit."""
    key = _key()
    data = (await control.get(f"/_emulator/files/{FILE_SIZE}/{key}")).content
    assert hashlib.sha256(data).hexdigest() == expected_file_sha256(FILE_SIZE, key)

    draft = await emu_mailer.create_draft(MAILBOX, _message(key))
    small_id = await emu_mailer.add_attachment(MAILBOX, draft.id, "note.txt", "text/plain", b"small one")
    session = await emu_mailer.create_upload_session(MAILBOX, draft.id, "big.bin", FILE_SIZE, "application/pdf")
    offset: int | None = session.next_offset
    puts = 0
    location = None
    while offset is not None:
        progress = await emu_mailer.upload_chunk(
            session.upload_url, offset, data[offset : offset + CHUNK], FILE_SIZE, mailbox=MAILBOX
        )
        offset, location, puts = progress.next_offset, progress.location, puts + 1
    assert puts == 2  # 3,276,800 + 1,966,080 bytes
    assert location is not None

    listed = {a.name: a for a in await emu_mailer.list_attachments(MAILBOX, draft.id)}
    assert listed["big.bin"].size == FILE_SIZE
    assert listed["note.txt"].id == small_id
    assert (await emu_mailer.get_message(MAILBOX, draft.id)) is not None

    await emu_mailer.send_draft(MAILBOX, draft.id)

    assert (await _stats(control))["sends_by_correlation"] == {key: 1}
    sent = await emu_mailer.find_by_correlation(MAILBOX, key, "SentItems")
    assert sent is not None
    assert sent.internet_message_id == draft.internet_message_id
    assert await emu_mailer.find_by_correlation(MAILBOX, key, "Drafts") is None

    mime = email.message_from_bytes(await emu_mailer.get_mime(MAILBOX, sent.id), policy=email.policy.default)
    assert isinstance(mime, EmailMessage)
    parts = {part.get_filename(): part.get_payload(decode=True) for part in mime.iter_attachments()}
    assert hashlib.sha256(parts["big.bin"]).hexdigest() == expected_file_sha256(FILE_SIZE, key)
    assert parts["note.txt"] == b"small one"
    assert mime["x-mailpipe-correlation"] == key


async def test_resume_an_interrupted_upload(emu_mailer: GraphMailer, control: httpx.AsyncClient) -> None:
    """After a crash the session says where to go on; an out-of-order chunk is told the same."""
    key = _key()
    data = (await control.get(f"/_emulator/files/{FILE_SIZE}/{key}")).content
    draft = await emu_mailer.create_draft(MAILBOX, _message(key))
    session = await emu_mailer.create_upload_session(MAILBOX, draft.id, "big.bin", FILE_SIZE, "application/pdf")
    first = await emu_mailer.upload_chunk(session.upload_url, 0, data[:CHUNK], FILE_SIZE)
    assert first.next_offset == CHUNK
    # ... the worker dies here; its successor only has the upload URL.

    resume_at = await emu_mailer.upload_status(session.upload_url, mailbox=MAILBOX)
    assert resume_at == CHUNK

    with pytest.raises(UploadRangeMismatch) as caught:  # a successor that guessed wrong
        await emu_mailer.upload_chunk(session.upload_url, 0, data[:CHUNK], FILE_SIZE)
    assert caught.value.expected_offset == CHUNK

    last = await emu_mailer.upload_chunk(session.upload_url, resume_at, data[resume_at:], FILE_SIZE)
    assert last.done
    assert last.location is not None
    assert await emu_mailer.upload_status(session.upload_url) is None  # session closed
    sizes = [a.size for a in await emu_mailer.list_attachments(MAILBOX, draft.id)]
    assert sizes == [FILE_SIZE]


async def test_503_is_one_request_and_no_send(
    emu_mailer: GraphMailer, control: httpx.AsyncClient, running: RunningEmulator
) -> None:
    await control.post("/_emulator/config", json={"fail_503_rate": 1.0})
    key = _key()

    with pytest.raises(GraphUnavailable) as caught:
        await emu_mailer.send_mail(MAILBOX, _message(key))

    assert caught.value.status_code == 503
    assert caught.value.retry_after_s is not None
    stats = await _stats(control)
    assert stats["sends_by_correlation"].get(key, 0) == 0
    assert stats["mailboxes"][MAILBOX]["requests"] == 1


async def test_504_after_a_real_send_is_unknown_and_the_mail_can_be_found(
    emu_mailer: GraphMailer, control: httpx.AsyncClient
) -> None:
    await control.post("/_emulator/config", json={"fail_504_after_send_rate": 1.0})
    key = _key()

    with pytest.raises(SendOutcomeUnknown):
        await emu_mailer.send_mail(MAILBOX, _message(key))

    assert (await _stats(control))["sends_by_correlation"] == {key: 1}
    assert await emu_mailer.find_by_correlation(MAILBOX, key, "SentItems") is not None


async def test_throttling_reaches_the_limiter(
    emu_mailer: GraphMailer, control: httpx.AsyncClient, emu_limiter: RecordingLimiter
) -> None:
    await control.post(
        "/_emulator/config",
        json={"mailbox_requests_per_window": 1, "mailbox_window_s": 60, "throttle_retry_after_s": 2.5},
    )
    await emu_mailer.get_message(MAILBOX, "missing")  # uses the one allowed request (404 -> None)

    with pytest.raises(GraphUnavailable) as caught:
        await emu_mailer.get_message(MAILBOX, "missing")

    assert caught.value.status_code == 429
    assert emu_limiter.throttled and emu_limiter.throttled[0][0] == MAILBOX
    assert emu_limiter.throttled[0][1] >= 2.5


async def test_wrong_token_is_not_rejected_for_good(emu_settings: Settings, control: httpx.AsyncClient) -> None:
    """A 401 is transient for the pipeline (token may be refreshed), never a dead letter."""
    provider = GraphTokenProvider(emu_settings.graph_base_url, static_token="wrong")
    async with (
        build_graph_client(emu_settings, token_provider=provider) as graph,
        httpx.AsyncClient() as upload_http,
    ):
        mailer = GraphMailer(graph, upload_http, NoLimiter(), emu_settings)
        with pytest.raises(GraphUnavailable) as caught:
            await mailer.get_message(MAILBOX, "x")
    assert caught.value.status_code == 401
    assert not isinstance(caught.value, GraphRejected)
