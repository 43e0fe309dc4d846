"""sendMail: Graph's status codes, validation rules, URL tolerance and the send ledger."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from email.message import EmailMessage

import httpx

from pipeline.emulator import RunningEmulator

MAILBOX = "sender@contoso.test"
Codes = Callable[[httpx.Response], str]


async def test_send_mail_is_202_with_empty_body_and_counts_every_send(graph, emu, new_message) -> None:
    """A send answers 202 with no body and no id; sending twice shows up as a duplicate."""
    for _ in range(2):
        response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message("dup")})
        assert response.status_code == 202
        assert response.content == b""
        assert response.headers["request-id"]
        assert response.headers["client-request-id"]

    stats = emu.emulator.stats()
    assert stats["sends_by_correlation"] == {"dup": 2}
    assert [s["correlation"] for s in stats["sent"]] == ["dup", "dup"]
    assert stats["sent"][0]["sent_id"] != stats["sent"][1]["sent_id"]
    assert stats["mailboxes"][MAILBOX]["sends"] == 2


async def test_client_request_id_is_echoed(graph, new_message) -> None:
    """Graph echoes the caller's client-request-id and adds its own request-id."""
    response = await graph.post(
        f"/users/{MAILBOX}/sendMail",
        json={"message": new_message()},
        headers={"client-request-id": "my-id-1"},
    )
    assert response.headers["client-request-id"] == "my-id-1"
    assert response.headers["request-id"] != "my-id-1"


async def test_double_slash_percent_encoding_and_case_reach_one_mailbox(graph, emu, new_message) -> None:
    """``//users``, ``%40`` and a differently cased UPN all address the same mailbox."""
    # The SDK's default base URL produces exactly this: ".../v1.0//users/u%40x/..."
    for url in (
        f"{emu.base_url}//users/Sender%40Contoso.test/sendMail",
        "/users/SENDER@contoso.test/SendMail",
    ):
        response = await graph.post(url, json={"message": new_message(url)})
        assert response.status_code == 202, response.text
    assert list(emu.emulator.stats()["mailboxes"]) == [MAILBOX]
    listing = await graph.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages")
    assert len(listing.json()["value"]) == 2


async def test_missing_or_wrong_token_is_401(emu, new_message, code_of: Codes) -> None:
    """Only ``Bearer <static_token>`` is accepted on /v1.0."""
    async with httpx.AsyncClient(base_url=emu.base_url) as client:
        missing = await client.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message()})
        wrong = await client.post(
            f"/users/{MAILBOX}/sendMail",
            json={"message": new_message()},
            headers={"Authorization": "Bearer nope"},
        )
    assert (missing.status_code, code_of(missing)) == (401, "InvalidAuthenticationToken")
    assert (wrong.status_code, code_of(wrong)) == (401, "InvalidAuthenticationToken")
    body = wrong.json()["error"]["innerError"]
    assert body["request-id"] == wrong.headers["request-id"]
    assert emu.emulator.stats()["sent"] == []


async def test_recipient_rules(graph, new_message, code_of: Codes) -> None:
    """No recipient, or more than 500, is ErrorInvalidRecipients; bcc alone is enough."""
    none = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(toRecipients=[])})
    assert (none.status_code, code_of(none)) == (400, "ErrorInvalidRecipients")

    many = [{"emailAddress": {"address": f"r{i}@example.test"}} for i in range(501)]
    too_many = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(bccRecipients=many)})
    assert (too_many.status_code, code_of(too_many)) == (400, "ErrorInvalidRecipients")

    bcc_only = new_message(toRecipients=[], bccRecipients=many[:500])
    assert (await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": bcc_only})).status_code == 202


async def test_internet_message_header_rules(graph, emu, new_message, code_of: Codes) -> None:
    """Names must start with x-; 1 to 5 headers; an empty list is refused too."""
    bad_name = new_message(internetMessageHeaders=[{"name": "In-Reply-To", "value": "<a@b>"}])
    empty = new_message(internetMessageHeaders=[])
    six = new_message(internetMessageHeaders=[{"name": f"x-h{i}", "value": "v"} for i in range(6)])
    expected = [
        (bad_name, "InvalidInternetMessageHeader"),
        (empty, "InvalidInternetMessageHeaderCollection"),
        (six, "InvalidInternetMessageHeaderCollection"),
    ]
    for message, code in expected:
        response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": message})
        assert (response.status_code, code_of(response)) == (400, code)
    five = new_message(internetMessageHeaders=[{"name": f"X-h{i}", "value": "v"} for i in range(5)])
    assert (await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": five})).status_code == 202
    assert len(emu.emulator.stats()["sent"]) == 1


async def test_request_over_4_mb_is_413(graph, emu, new_message, code_of: Codes) -> None:
    """A whole request over 4 MiB (here: a 3.3 MB inline attachment, base64) is refused."""
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "big.bin",
        "contentBytes": base64.b64encode(b"\0" * 3_300_000).decode(),
    }
    response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(attachments=[attachment])})
    assert (response.status_code, code_of(response)) == (413, "RequestEntityTooLarge")
    assert emu.emulator.stats()["sent"] == []


async def test_inline_attachment_is_sent_and_summarised(graph, emu, new_message) -> None:
    """Small inline fileAttachments travel with sendMail; stats list name, size and sha256."""
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.txt",
        "contentType": "text/plain",
        "contentBytes": base64.b64encode(b"hello").decode(),
    }
    response = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(attachments=[attachment])})
    assert response.status_code == 202
    (sent,) = emu.emulator.stats()["sent"]
    assert sent["attachments"] == [
        {
            "name": "a.txt",
            "size": 5,
            "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
        }
    ]


async def test_save_to_sent_items_false_sends_without_a_copy(graph, emu, new_message) -> None:
    """saveToSentItems=false still sends (and counts), but leaves nothing to find later."""
    response = await graph.post(
        f"/users/{MAILBOX}/sendMail", json={"message": new_message("nocopy"), "saveToSentItems": False}
    )
    assert response.status_code == 202
    assert emu.emulator.stats()["sends_by_correlation"] == {"nocopy": 1}
    assert emu.emulator.stats()["sent"][0]["sent_id"] is None
    listing = await graph.get(f"/users/{MAILBOX}/mailFolders/sentitems/messages")
    assert listing.json()["value"] == []


async def test_sent_items_copy_appears_only_after_the_delay(graph, emu: RunningEmulator, new_message) -> None:
    """Transport is asynchronous: the Sent Items copy is invisible for sent_items_delay_s."""
    emu.emulator.update_config({"sent_items_delay_s": 0.4})
    message = new_message("late", internetMessageId="<late-1@client.test>")
    assert (await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": message})).status_code == 202
    query = {"$filter": "internetMessageId eq '<late-1@client.test>'"}

    early = await graph.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages", params=query)
    assert early.json()["value"] == []
    await asyncio.sleep(0.5)
    later = await graph.get(f"/users/{MAILBOX}/mailFolders/SentItems/messages", params=query)
    (copy,) = later.json()["value"]
    assert copy["internetMessageId"] == "<late-1@client.test>"
    assert copy["isDraft"] is False


async def test_mime_send_mail(graph, emu, code_of: Codes) -> None:
    """sendMail also takes base64 MIME as text/plain; bad base64 is ErrorMimeContentInvalidBase64String."""
    mime = EmailMessage()
    mime["To"] = "rcpt@example.test"
    mime["Subject"] = "mime"
    mime["Message-ID"] = "<mime-1@client.test>"
    mime["X-Mailpipe-Correlation"] = "mime-1"
    mime.set_content("hello")
    mime.add_attachment(b"\x01\x02", maintype="application", subtype="octet-stream", filename="b.bin")
    headers = {"Content-Type": "text/plain"}
    ok = await graph.post(f"/users/{MAILBOX}/sendMail", content=base64.b64encode(mime.as_bytes()), headers=headers)
    assert ok.status_code == 202
    (sent,) = emu.emulator.stats()["sent"]
    assert (sent["correlation"], sent["internet_message_id"]) == ("mime-1", "<mime-1@client.test>")
    assert sent["attachments"][0]["size"] == 2

    bad = await graph.post(f"/users/{MAILBOX}/sendMail", content=b"not base64!!", headers=headers)
    assert (bad.status_code, code_of(bad)) == (400, "ErrorMimeContentInvalidBase64String")


async def test_unknown_property_and_bad_json_are_400(graph, new_message, code_of: Codes) -> None:
    """Graph's OData reader refuses unknown properties and malformed JSON."""
    unknown = await graph.post(f"/users/{MAILBOX}/sendMail", json={"message": new_message(colour="red")})
    assert (unknown.status_code, code_of(unknown)) == (400, "RequestBodyRead")
    bad = await graph.post(f"/users/{MAILBOX}/sendMail", content=b"{", headers={"Content-Type": "application/json"})
    assert (bad.status_code, code_of(bad)) == (400, "BadRequest")
