"""The pre-authenticated upload URL: ``PUT|GET|DELETE /upload/{session_id}?authtoken=...``.

Outside ``/v1.0`` on purpose — in Graph it lives on ``outlook.office.com`` — and it behaves like
Outlook's (graph-facts §1.6):

* an ``Authorization`` header is refused with 401 ``InvalidAudience`` (the Graph token is for a
  different audience; the SDK's LargeFileUploadTask trips on exactly this);
* ``Content-Range: bytes S-E/T`` must start at the next expected byte (else 416, naming it) and
  carry at most ``max_upload_chunk_bytes`` (else 413);
* intermediate ranges answer 200 ``{"ExpirationDateTime", "nextExpectedRanges": ["N"]}``; the
  last one answers 201 with an empty body and the attachment's URL in ``Location``.

Each range is buffered (at most one chunk) and committed only once complete, so a dropped
connection leaves the session exactly where it was and the client can resume.
"""

from __future__ import annotations

import re

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from .bodies import drain, too_large
from .emulator import Emulator
from .errors import GraphError, bad_request, error_response
from .uploads import UploadSession

__all__ = ["upload_endpoint"]

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+)\s*$", re.IGNORECASE)


def _session(request: Request, emulator: Emulator) -> UploadSession:
    if "authorization" in request.headers:
        raise GraphError(401, "InvalidAudience", "The audience claim value is invalid 'aud'.")
    return emulator.uploads.get(request.path_params["session_id"], request.query_params.get("authtoken"))


def _range(request: Request, session: UploadSession) -> tuple[int, int]:
    match = _CONTENT_RANGE.match(request.headers.get("content-range", ""))
    if match is None:
        raise bad_request("Content-Range must be 'bytes start-end/total'.", code="InvalidContentRange")
    start, end, total = (int(g) for g in match.groups())
    if total != session.size:
        raise bad_request(f"The total size {total} does not match the session's {session.size}.")
    if end < start or end >= total:
        raise bad_request(f"Invalid range {start}-{end} for a file of {total} bytes.", code="InvalidContentRange")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != end - start + 1:
        raise bad_request("Content-Length does not match Content-Range.")
    return start, end


def _out_of_order(session: UploadSession, why: str) -> GraphError:
    return GraphError(
        416,
        "InvalidRange",
        f"{why} The next expected range starts at {session.next_offset}.",
        extra={"nextExpectedRanges": [str(session.next_offset)]},
    )


async def _put(request: Request, emulator: Emulator) -> Response:
    session = _session(request, emulator)
    start, end = _range(request, session)
    length = end - start + 1
    if length > emulator.config.max_upload_chunk_bytes:
        raise too_large(emulator.config.max_upload_chunk_bytes)
    if session.busy:
        raise _out_of_order(session, "Another range of this session is being uploaded.")
    if start != session.next_offset:
        raise _out_of_order(session, f"The range {start}-{end} is out of order.")
    session.busy = True
    try:
        chunk = bytearray()
        async for part in request.stream():
            chunk.extend(part)
            if len(chunk) > length:
                break  # more bytes than Content-Range announced; refused below
    finally:
        session.busy = False
    if len(chunk) != length:
        raise bad_request(f"Received {len(chunk)} bytes for a range of {length}.", code="InvalidContentRange")
    session.commit(bytes(chunk))
    emulator.recorder.bump(session.upn.lower(), "uploaded_bytes", length)
    if not session.complete:
        return JSONResponse(session.progress_body())
    attachment = session.to_attachment()
    emulator.uploads.discard(session.id)
    emulator.store.add_attachment(session.upn, session.message_id, attachment)
    location = (
        f"{str(request.base_url).rstrip('/')}/v1.0/users('{session.upn}')"
        f"/messages('{session.message_id}')/attachments('{attachment.id}')"
    )
    return Response(status_code=201, headers={"Location": location, "Content-Length": "0"})


async def upload_endpoint(request: Request) -> Response:
    """Dispatch PUT (upload a range), GET (resume point) and DELETE (cancel)."""
    emulator: Emulator = request.app.state.emulator
    try:
        if request.method == "PUT":
            try:
                return await _put(request, emulator)
            except GraphError:
                await drain(request)
                raise
        session = _session(request, emulator)
        if request.method == "DELETE":
            emulator.uploads.discard(session.id)
            return Response(status_code=204)
        return JSONResponse(session.progress_body())
    except GraphError as error:
        return error_response(request, error)
    except ClientDisconnect:
        return Response(status_code=400)  # the range was not committed; the client may resume
