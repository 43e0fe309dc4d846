"""The draft flow: create, attach (small and via upload session), send, find in Sent Items, MIME."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from email import message_from_bytes, policy
from typing import Any

import httpx

from pipeline.emulator import RunningEmulator, expected_file_sha256

MAILBOX = "sender@contoso.test"
CHUNK = 4 * 320 * 1024
FILE_SIZE = 5 * 1024 * 1024
FILE_SEED = "draft-flow"
PROP_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name MailpipeCorrelation"
Codes = Callable[[httpx.Response], str]


def _range(start: int, end: int) -> dict[str, str]:
    return {"Content-Range": f"bytes {start}-{end}/{FILE_SIZE}", "Content-Type": "application/octet-stream"}


async def _create_draft(graph: httpx.AsyncClient, message: dict[str, Any]) -> dict[str, Any]:
    response = await graph.post(f"/users/{MAILBOX}/messages", json=message)
    assert response.status_code == 201, response.text
    draft: dict[str, Any] = response.json()
    return draft


async def _open_session(graph: httpx.AsyncClient, draft_id: str, size: int = FILE_SIZE) -> httpx.Response:
    return await graph.post(
        f"/users/{MAILBOX}/messages/{draft_id}/attachments/createUploadSession",
        json={"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}},
    )


async def test_full_draft_flow_with_upload_session(graph, plain, emu: RunningEmulator, new_message, code_of: Codes):
    """Draft -> small attachment -> 5 MB upload in 320 KiB-multiple chunks -> send -> Sent Items."""
    # Given a draft tagged with a custom header and a single-value extended property
    message = new_message("flow", singleValueExtendedProperties=[{"id": PROP_ID, "value": "flow-key"}])
    draft = await _create_draft(graph, message)
    assert draft["isDraft"] is True
    assert draft["internetMessageId"].startswith("<") and draft["internetMessageId"].endswith("@emulator.local>")
    assert {"conversationId", "parentFolderId", "createdDateTime"} <= draft.keys()
    assert "singleValueExtendedProperties" not in draft and "internetMessageHeaders" not in draft
    base = f"/users/{MAILBOX}/messages/{draft['id']}"

    # When a small attachment is posted inline
    small = await graph.post(
        f"{base}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "small.txt",
            "contentBytes": base64.b64encode(b"small").decode(),
        },
    )
    assert small.status_code == 201 and small.json()["size"] == 5

    # And a 5 MB file is uploaded from the emulator's file source through an upload session
    created = await _open_session(graph, draft["id"])
    assert created.status_code == 201
    session = created.json()
    assert session["nextExpectedRanges"] == ["0-"]
    upload_url = session["uploadUrl"]
    source = await plain.get(f"/_emulator/files/{FILE_SIZE}/{FILE_SEED}/big.bin")
    data = source.content

    with_auth = await plain.put(
        upload_url, content=data[:CHUNK], headers={**_range(0, CHUNK - 1), "Authorization": "Bearer x"}
    )
    assert (with_auth.status_code, code_of(with_auth)) == (401, "InvalidAudience")

    first = await plain.put(upload_url, content=data[:CHUNK], headers=_range(0, CHUNK - 1))
    assert first.status_code == 200
    assert first.json()["nextExpectedRanges"] == [str(CHUNK)]
    assert "ExpirationDateTime" in first.json()

    skipped = await plain.put(upload_url, content=data[2 * CHUNK : 3 * CHUNK], headers=_range(2 * CHUNK, 3 * CHUNK - 1))
    assert skipped.status_code == 416
    assert skipped.json()["nextExpectedRanges"] == [str(CHUNK)]

    resume = await plain.get(upload_url)  # what a client does after a crash
    assert resume.json()["nextExpectedRanges"] == [str(CHUNK)]

    final: httpx.Response | None = None
    for start in range(CHUNK, FILE_SIZE, CHUNK):
        end = min(start + CHUNK, FILE_SIZE) - 1
        final = await plain.put(upload_url, content=data[start : end + 1], headers=_range(start, end))
        assert final.status_code == (201 if end == FILE_SIZE - 1 else 200), final.text
    assert final is not None and final.content == b"" and final.headers["content-length"] == "0"
    location = final.headers["location"]
    assert location.startswith(f"{emu.root_url}/v1.0/users('{MAILBOX}')/messages('{draft['id']}')/attachments('")
    fetched = await graph.get(location)
    assert fetched.status_code == 200 and fetched.json()["size"] == FILE_SIZE
    assert (await plain.get(upload_url)).status_code == 404  # the finished session is gone

    listed = (await graph.get(f"{base}/attachments")).json()["value"]
    assert [(a["name"], a["size"]) for a in listed] == [("small.txt", 5), ("big.bin", FILE_SIZE)]
    assert all("contentBytes" not in a for a in listed)

    # When the draft is sent
    sent = await graph.post(f"{base}/send")
    assert (sent.status_code, sent.content) == (202, b"")

    # Then the draft id is gone and the Sent Items copy has a new id, found both ways
    gone = await graph.get(base)
    assert (gone.status_code, code_of(gone)) == (404, "ErrorItemNotFound")
    by_imid = await graph.get(
        f"/users/{MAILBOX}/mailFolders/SentItems/messages",
        params={
            "$filter": f"internetMessageId eq '{draft['internetMessageId']}'",
            "$select": "id,isDraft,sentDateTime",
        },
    )
    (copy,) = by_imid.json()["value"]
    assert copy["id"] != draft["id"] and copy["isDraft"] is False and copy["sentDateTime"]
    prop_filter = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP_ID}' and ep/value eq 'flow-key')"
    by_prop = await graph.get(
        f"/users/{MAILBOX}/messages",
        params={
            "$filter": prop_filter,
            "$expand": f"singleValueExtendedProperties($filter=id eq '{PROP_ID}')",
        },
    )
    (found,) = by_prop.json()["value"]
    assert found["id"] == copy["id"]
    assert found["singleValueExtendedProperties"] == [{"id": PROP_ID, "value": "flow-key"}]

    # And the MIME of the copy carries both attachments bit for bit
    mime = await graph.get(f"/users/{MAILBOX}/messages/{copy['id']}/$value")
    assert mime.headers["content-type"].startswith("text/plain")
    parsed = message_from_bytes(mime.content, policy=policy.default)
    assert parsed["Message-ID"] == draft["internetMessageId"]
    assert parsed["x-mailpipe-correlation"] == "flow"
    payloads = {part.get_filename(): part.get_payload(decode=True) for part in parsed.iter_attachments()}
    assert payloads["small.txt"] == b"small"
    assert hashlib.sha256(payloads["big.bin"]).hexdigest() == expected_file_sha256(FILE_SIZE, FILE_SEED)

    (ledger,) = emu.emulator.stats()["sent"]
    assert ledger["sent_id"] == copy["id"] and ledger["correlation"] == "flow"
    assert ledger["attachments"][1]["sha256"] == expected_file_sha256(FILE_SIZE, FILE_SEED)
    assert emu.emulator.stats()["mailboxes"][MAILBOX]["uploaded_bytes"] == FILE_SIZE


async def test_upload_session_limits_and_cancel(graph, plain, new_message, code_of: Codes) -> None:
    """Sessions refuse < 3 MB files and > 4 MB chunks; DELETE cancels; unknown URLs are 404."""
    draft = await _create_draft(graph, new_message())
    tiny = await _open_session(graph, draft["id"], size=1024)
    assert (tiny.status_code, code_of(tiny)) == (400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize")

    upload_url = (await _open_session(graph, draft["id"])).json()["uploadUrl"]
    too_big = 4 * 1024 * 1024 + 1
    chunk = await plain.put(upload_url, content=b"\0" * too_big, headers=_range(0, too_big - 1))
    assert chunk.status_code == 413
    forged = upload_url.split("?")[0] + "?authtoken=forged"
    assert (await plain.get(forged)).status_code == 401
    assert (await plain.delete(upload_url)).status_code == 204
    assert (await plain.get(upload_url)).status_code == 404


async def test_draft_patch_get_delete_and_send_rules(graph, new_message, code_of: Codes) -> None:
    """PATCH works on drafts only; $select trims; unknown ids 404; a sent item cannot be re-sent."""
    draft = await _create_draft(graph, new_message("patch"))
    base = f"/users/{MAILBOX}/messages/{draft['id']}"
    patched = await graph.patch(base, json={"subject": "changed", "internetMessageId": "<mine@client.test>"})
    assert patched.status_code == 200 and patched.json()["subject"] == "changed"

    selected = (await graph.get(base, params={"$select": "subject,internetMessageHeaders"})).json()
    assert set(selected) == {"@odata.context", "@odata.etag", "id", "subject", "internetMessageHeaders"}
    assert selected["internetMessageHeaders"] == [{"name": "x-mailpipe-correlation", "value": "patch"}]

    assert (await graph.post(f"{base}/send")).status_code == 202
    listing = await graph.get(
        f"/users/{MAILBOX}/mailFolders/sentitems/messages",
        params={"$filter": "internetMessageId eq '<mine@client.test>'"},
    )
    copy_id = listing.json()["value"][0]["id"]
    resend = await graph.post(f"/users/{MAILBOX}/messages/{copy_id}/send")
    assert resend.status_code == 400
    repatch = await graph.patch(f"/users/{MAILBOX}/messages/{copy_id}", json={"subject": "x"})
    assert repatch.status_code == 400

    missing = await graph.get(f"/users/{MAILBOX}/messages/AAMkdoesnotexist=")
    assert (missing.status_code, code_of(missing)) == (404, "ErrorItemNotFound")
    other = await _create_draft(graph, new_message("del"))
    assert (await graph.delete(f"/users/{MAILBOX}/messages/{other['id']}")).status_code == 204
    assert (await graph.get(f"/users/{MAILBOX}/messages/{other['id']}")).status_code == 404
    assert (await graph.post(f"/users/{MAILBOX}/messages/{other['id']}/send")).status_code == 404


async def test_without_kept_bytes_mime_carries_a_placeholder(graph, emu: RunningEmulator, new_message) -> None:
    """keep_attachment_bytes=False keeps size and sha256 only; $value shows a placeholder part."""
    emu.emulator.update_config({"keep_attachment_bytes": False})
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.bin",
        "contentBytes": base64.b64encode(b"abc").decode(),
    }
    draft = await _create_draft(graph, new_message(attachments=[attachment]))
    mime = await graph.get(f"/users/{MAILBOX}/messages/{draft['id']}/$value")
    (part,) = message_from_bytes(mime.content, policy=policy.default).iter_attachments()
    assert part["X-Emulator-Placeholder"] == "true"
    assert part["X-Emulator-Sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert part["X-Emulator-Size"] == "3"


async def test_upload_session_expires_and_dies_with_its_draft(graph, plain, emu: RunningEmulator, new_message, code_of):
    """An expired session URL is 404; finishing an upload after the draft was sent is 404 too."""
    emu.emulator.update_config({"upload_session_ttl_s": 0.2})
    draft = await _create_draft(graph, new_message("expiry"))
    expiring = (await _open_session(graph, draft["id"])).json()["uploadUrl"]
    await asyncio.sleep(0.3)
    assert (await plain.get(expiring)).status_code == 404

    emu.emulator.update_config({"upload_session_ttl_s": 60})
    too_large = await _open_session(graph, draft["id"], size=150 * 1024 * 1024 + 1)
    assert too_large.status_code == 400
    upload_url = (await _open_session(graph, draft["id"])).json()["uploadUrl"]
    assert (await graph.post(f"/users/{MAILBOX}/messages/{draft['id']}/send")).status_code == 202
    data = b"\1" * FILE_SIZE
    first = await plain.put(upload_url, content=data[:CHUNK], headers=_range(0, CHUNK - 1))
    assert first.status_code == 200
    last = await plain.put(upload_url, content=data[CHUNK:], headers=_range(CHUNK, FILE_SIZE - 1))
    assert (last.status_code, code_of(last)) == (404, "ErrorItemNotFound")


async def test_listing_pages_with_next_link(graph, new_message) -> None:
    """Collections page at 10 items by default with @odata.nextLink; $top changes the page size."""
    for index in range(12):
        await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(f"page-{index}")})
    first = (await graph.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages")).json()
    assert len(first["value"]) == 10
    second = (await graph.get(first["@odata.nextLink"])).json()
    assert len(second["value"]) == 2 and "@odata.nextLink" not in second
    ids = {m["id"] for m in first["value"]} | {m["id"] for m in second["value"]}
    assert len(ids) == 12
    top = (await graph.get(f"/users/{MAILBOX}/messages", params={"$top": "3"})).json()
    assert len(top["value"]) == 3
