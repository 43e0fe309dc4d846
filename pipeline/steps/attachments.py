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


async def _rows(ctx: AppContext, email: IncomingEmail, files: list[Attachment], draft_id: str) -> list[FileUpload]:
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


class DraftFiles:
    """Puts one email's files on its draft, recording progress row by row."""

    def __init__(self, ctx: AppContext, mailer: GraphMailer, email: IncomingEmail, attempt: int, draft_id: str):
        self._ctx = ctx
        self._mailer = mailer
        self._email = email
        self._attempt = attempt
        self._draft_id = draft_id
        self._http = ctx.require_download_client()
        self._on_draft: Counter[tuple[str, int]] | None = None

    async def _save(self, row: FileUpload, **values: object) -> None:
        async with store_errors("upload progress"), self._ctx.sessions.begin() as session:
            await session.execute(
                update(FileUpload).where(FileUpload.id == row.id).values(updated_at=utcnow(), **values)
            )
            await sending.touch(session, row.incoming_email_id, self._attempt, utcnow())
        for key, value in values.items():
            setattr(row, key, value)

    async def _already_on_draft(self, item: Attachment) -> bool:
        """Whether an earlier try finished this file without recording it (counted once each)."""
        if self._on_draft is None:
            listed = await self._mailer.list_attachments(self._email.mailbox, self._draft_id)
            self._on_draft = Counter((a.name or "", a.size or 0) for a in listed)
        if self._on_draft[(item.name, item.size)] > 0:
            self._on_draft[(item.name, item.size)] -= 1
            return True
        return False

    async def attach(self, item: Attachment, row: FileUpload) -> None:
        if row.status == "done":
            return
        if item.size < self._ctx.settings.inline_attachment_limit_bytes:
            await self._attach_small(item, row)
        else:
            await self._attach_large(item, row)

    async def _attach_small(self, item: Attachment, row: FileUpload) -> None:
        # "uploading" means an add may have succeeded before a crash: look before adding again.
        if row.status == "uploading" and await self._already_on_draft(item):
            await self._save(row, status="done", bytes_confirmed=item.size)
            return
        if item.content_bytes is not None:
            data = item.decoded_bytes()
        else:
            data = await fetch_small(self._http, str(item.url_or_id), size=item.size)
        await self._save(row, status="uploading")
        attachment_id = await self._mailer.add_attachment(
            self._email.mailbox, self._draft_id, item.name, item.content_type, data
        )
        await self._save(
            row,
            status="done",
            bytes_confirmed=item.size,
            graph_attachment_id=attachment_id,
            sha256=hashlib.sha256(data).hexdigest(),
        )

    async def _resume_offset(self, item: Attachment, row: FileUpload) -> int | None:
        """Where an interrupted upload session continues, or None to start a new one."""
        if row.status != "uploading" or row.upload_url is None:
            return None
        offset = await self._mailer.upload_status(row.upload_url)
        if offset is None and await self._already_on_draft(item):
            return item.size  # the last chunk landed before the crash: the file is on the draft
        return offset

    async def _attach_large(self, item: Attachment, row: FileUpload) -> None:
        offset = await self._resume_offset(item, row)
        if offset is None:
            session = await self._mailer.create_upload_session(
                self._email.mailbox, self._draft_id, item.name, item.size, item.content_type
            )
            await self._save(row, status="uploading", upload_url=session.upload_url, bytes_confirmed=0)
            offset = session.next_offset
        upload_url = row.upload_url or ""
        # The source is read from the start so the sha256 covers the whole file; bytes before
        # the resume point are hashed but not uploaded again.
        digest = hashlib.sha256()
        position = 0
        location: str | None = None
        async for chunk in stream_chunks(
            self._http, str(item.url_or_id), size=item.size, chunk_bytes=self._ctx.settings.upload_chunk_bytes
        ):
            digest.update(chunk)
            end = position + len(chunk)
            if end > offset:
                piece = chunk[max(0, offset - position) :]
                progress = await self._mailer.upload_chunk(upload_url, offset, piece, item.size)
                offset = progress.next_offset if progress.next_offset is not None else end
                location = progress.location or location
                await self._save(row, bytes_confirmed=offset)
            position = end
        await self._save(
            row,
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
    builder = DraftFiles(ctx, mailer, email, attempt, draft_id)
    for item, row in zip(files, rows, strict=True):
        await builder.attach(item, row)
    await _verify(ctx, mailer, email, draft_id, files)
    return draft_id


async def _verify(
    ctx: AppContext,
    mailer: GraphMailer,
    email: IncomingEmail,
    draft_id: str,
    files: list[Attachment],
) -> None:
    expected = Counter((f.name, f.size) for f in files)
    listed = await mailer.list_attachments(email.mailbox, draft_id)
    actual = Counter((a.name or "", a.size or 0) for a in listed)
    if actual == expected:
        return
    await mailer.delete_message(email.mailbox, draft_id)
    async with store_errors("draft reset"), ctx.sessions.begin() as session:
        await sending.set_draft(session, email.id, email.attempt_count, None)
        await session.execute(
            update(FileUpload)
            .where(FileUpload.incoming_email_id == email.id)
            .values(status="pending", bytes_confirmed=0, upload_url=None, draft_id=None)
        )
    email.graph_draft_id = None
    raise GraphUnavailable(
        f"draft {draft_id} had files {dict(actual)} instead of {dict(expected)}; it was deleted to be rebuilt"
    )
