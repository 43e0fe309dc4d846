"""Attachment pool: build the draft and put every file on it exactly once, resumably.

Per file, ``file_uploads`` records the draft it belongs to, the upload session URL and the
last byte Graph confirmed. After a crash the next try resumes the session from Graph's own
``nextExpectedRanges`` (the source is read again from the start so the sha256 covers the whole
file, and bytes before the resume point are not uploaded again). A file whose upload may have
finished unrecorded is looked for on the draft before it is added again; if the draft's files
still do not match the email's, the draft is deleted and rebuilt: it was never sent, so a
rebuild cannot send anything twice.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from pipeline.context import AppContext
from pipeline.db import sending
from pipeline.db.errors import store_errors
from pipeline.db.models import FileUpload, IncomingEmail
from pipeline.db.types import utcnow
from pipeline.download import fetch_small, stream_chunks
from pipeline.errors import GraphUnavailable
from pipeline.graph import GraphMailer, OutgoingMessage
from pipeline.messages import Attachment
from pipeline.steps.compose import stored_send_email

__all__ = ["attach_all"]


async def _ensure_draft(
    ctx: AppContext, mailer: GraphMailer, email: IncomingEmail, attempt: int, message: OutgoingMessage
) -> str:
    if email.graph_draft_id:
        info = await mailer.get_message(email.mailbox, email.graph_draft_id)
        if info is not None and info.is_draft:
            return email.graph_draft_id
    found = await mailer.find_by_correlation(email.mailbox, email.correlation_key, "Drafts")
    draft_id = found.id if found is not None else (await mailer.create_draft(email.mailbox, message)).id
    async with store_errors("draft"), ctx.sessions.begin() as session:
        await sending.set_draft(session, email.id, attempt, draft_id)
    email.graph_draft_id = draft_id
    return draft_id


async def _rows(
    ctx: AppContext, email: IncomingEmail, files: list[Attachment], draft_id: str
) -> list[FileUpload]:
    """The ``file_uploads`` rows of this email, created once and reset if the draft changed."""
    async with store_errors("file uploads"), ctx.sessions.begin() as session:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        for index, item in enumerate(files):
            await session.execute(
                insert(FileUpload)
                .values(
                    incoming_email_id=email.id,
                    attachment_index=index,
                    name=item.name,
                    size=item.size,
                    draft_id=draft_id,
                    status="pending",
                    bytes_confirmed=0,
                    updated_at=utcnow(),
                )
                .on_conflict_do_nothing()
            )
        await session.execute(
            update(FileUpload)
            .where(
                FileUpload.incoming_email_id == email.id,
                or_(FileUpload.draft_id.is_(None), FileUpload.draft_id != draft_id),
            )
            .values(
                draft_id=draft_id,
                status="pending",
                bytes_confirmed=0,
                upload_url=None,
                graph_attachment_id=None,
                updated_at=utcnow(),
            )
        )
        rows = (
            (
                await session.execute(
                    select(FileUpload)
                    .where(FileUpload.incoming_email_id == email.id)
                    .order_by(FileUpload.attachment_index)
                )
            )
            .scalars()
            .all()
        )
    return list(rows)


async def _save(ctx: AppContext, row: FileUpload, attempt: int, **values: object) -> None:
    async with store_errors("upload progress"), ctx.sessions.begin() as session:
        await session.execute(
            update(FileUpload).where(FileUpload.id == row.id).values(updated_at=utcnow(), **values)
        )
        await sending.touch(session, row.incoming_email_id, attempt, utcnow())
    for key, value in values.items():
        setattr(row, key, value)


async def _attach_small(
    ctx: AppContext,
    mailer: GraphMailer,
    http: httpx.AsyncClient,
    email: IncomingEmail,
    draft_id: str,
    item: Attachment,
    row: FileUpload,
    attempt: int,
) -> None:
    if item.content_bytes is not None:
        data = item.decoded_bytes()
    else:
        data = await fetch_small(http, str(item.url_or_id), size=item.size)
    await _save(ctx, row, attempt, status="uploading")
    attachment_id = await mailer.add_attachment(email.mailbox, draft_id, item.name, item.content_type, data)
    await _save(
        ctx,
        row,
        attempt,
        status="done",
        bytes_confirmed=item.size,
        graph_attachment_id=attachment_id,
        sha256=hashlib.sha256(data).hexdigest(),
    )


async def _attach_large(
    ctx: AppContext,
    mailer: GraphMailer,
    http: httpx.AsyncClient,
    email: IncomingEmail,
    draft_id: str,
    item: Attachment,
    row: FileUpload,
    attempt: int,
) -> None:
    offset: int | None = await mailer.upload_status(row.upload_url) if row.upload_url else None
    if offset is None or row.upload_url is None:
        session = await mailer.create_upload_session(
            email.mailbox, draft_id, item.name, item.size, item.content_type
        )
        await _save(ctx, row, attempt, status="uploading", upload_url=session.upload_url, bytes_confirmed=0)
        offset = session.next_offset
    upload_url = row.upload_url
    assert upload_url is not None  # noqa: S101 - set just above
    digest = hashlib.sha256()
    position = 0
    location: str | None = None
    async for chunk in stream_chunks(
        http, str(item.url_or_id), size=item.size, chunk_bytes=ctx.settings.upload_chunk_bytes
    ):
        digest.update(chunk)
        end = position + len(chunk)
        if end > offset:
            piece = chunk[max(0, offset - position) :]
            progress = await mailer.upload_chunk(upload_url, offset, piece, item.size)
            offset = progress.next_offset if progress.next_offset is not None else end
            location = progress.location or location
            await _save(ctx, row, attempt, bytes_confirmed=offset)
        position = end
    await _save(
        ctx,
        row,
        attempt,
        status="done",
        bytes_confirmed=item.size,
        graph_attachment_id=location,
        sha256=digest.hexdigest(),
    )


async def attach_all(
    ctx: AppContext, mailer: GraphMailer, email: IncomingEmail, attempt: int, message: OutgoingMessage
) -> str:
    """Return the id of a draft carrying exactly the email's files, building what is missing."""
    draft_id = await _ensure_draft(ctx, mailer, email, attempt, message)
    files = stored_send_email(email).attachments
    rows = await _rows(ctx, email, files, draft_id)
    http = ctx.require_download_client()
    on_draft: Counter[tuple[str, int]] | None = None
    for item, row in zip(files, rows, strict=True):
        if row.status == "done":
            continue
        if row.status == "uploading" and item.size < ctx.settings.inline_attachment_limit_bytes:
            # An add may have succeeded before the crash: look before adding the file again.
            on_draft = on_draft or Counter(
                (a.name, a.size) for a in await mailer.list_attachments(email.mailbox, draft_id)
            )
            if on_draft[(item.name, item.size)] > 0:
                on_draft[(item.name, item.size)] -= 1
                await _save(ctx, row, attempt, status="done")
                continue
        if item.size < ctx.settings.inline_attachment_limit_bytes:
            await _attach_small(ctx, mailer, http, email, draft_id, item, row, attempt)
        else:
            await _attach_large(ctx, mailer, http, email, draft_id, item, row, attempt)
    await _verify(ctx, mailer, email, attempt, draft_id, files)
    return draft_id


async def _verify(
    ctx: AppContext,
    mailer: GraphMailer,
    email: IncomingEmail,
    attempt: int,
    draft_id: str,
    files: list[Attachment],
) -> None:
    expected = Counter((f.name, f.size) for f in files)
    actual = Counter((a.name, a.size) for a in await mailer.list_attachments(email.mailbox, draft_id))
    if actual == expected:
        return
    await mailer.delete_message(email.mailbox, draft_id)
    async with store_errors("draft reset"), ctx.sessions.begin() as session:
        await sending.set_draft(session, email.id, attempt, None)
        await session.execute(
            update(FileUpload)
            .where(FileUpload.incoming_email_id == email.id)
            .values(status="pending", bytes_confirmed=0, upload_url=None, draft_id=None)
        )
    email.graph_draft_id = None
    raise GraphUnavailable(
        f"draft {draft_id} had files {dict(actual)} instead of {dict(expected)}; it was deleted to be rebuilt"
    )
