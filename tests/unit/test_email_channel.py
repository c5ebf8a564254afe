"""The email channel's pure parts: Mailgun signatures and timestamp window, form parsing
(multipart with attachments, urlencoded), limits, addresses, titles, threading headers."""

from __future__ import annotations

import email
import email.policy
import time
import uuid

import httpx
import pytest

from hub.channels import HookRequest, Outgoing
from hub.channels import email as mail_channel
from hub.errors import BadRequest, PayloadTooLarge, Unauthorized
from hub.settings import Settings
from hub.titles import auto_title

ACCOUNT = {
    "id": uuid.uuid4(),
    "customer_id": uuid.uuid4(),
    "type": "email",
    "name": "Support",
    "address": "support@shop.example",
    "secret": "key-0123456789",
    "smtp_host": "127.0.0.1",
    "smtp_port": 2525,
    "smtp_security": "none",
    "smtp_username": "",
    "smtp_password": "",
}


def signed(timestamp: int | None = None, secret: str = ACCOUNT["secret"], **fields) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = {
        "sender": "Alice@Example.com",
        "from": "Alice Doe <Alice@Example.com>",
        "recipient": ACCOUNT["address"],
        "subject": "Order 42",
        "body-plain": "Where is it?\n\n> On Monday you wrote:\n> hi",
        "stripped-text": "Where is it?",
        "Message-Id": "<m1@example.com>",
        "timestamp": stamp,
        "token": "t" * 50,
    }
    base.update(fields)
    base["signature"] = mail_channel.signature(secret, base["timestamp"], base["token"])
    return base


def encoded(fields: dict[str, str], files: list | None = None) -> tuple[HookRequest, bytes]:
    """The request httpx would send (urlencoded, or multipart with files)."""
    request = httpx.Request("POST", "http://hub.test/hook", data=fields, files=files or None)
    body = request.read()
    return HookRequest(
        url="http://hub.test/hook", headers={"content-type": request.headers["content-type"]}
    ), body


def test_signature_and_timestamp_window():
    request, body = encoded(signed())
    assert mail_channel.verify(ACCOUNT, request, body)
    forged = {**signed(), "signature": "0" * 64}
    assert not mail_channel.verify(ACCOUNT, *encoded(forged))
    assert not mail_channel.verify(ACCOUNT, *encoded(signed(secret="another-key")))
    stale = signed(timestamp=int(time.time()) - 301)
    assert not mail_channel.verify(ACCOUNT, *encoded(stale))
    assert mail_channel.verify(ACCOUNT, *encoded(signed(timestamp=int(time.time()) - 290)))
    assert not mail_channel.verify(ACCOUNT, *encoded(signed(timestamp=int(time.time()) + 400)))
    assert not mail_channel.verify(ACCOUNT, *encoded({**signed(), "timestamp": "soon"}))
    with pytest.raises(Unauthorized):
        mail_channel.verify({**ACCOUNT, "secret": ""}, *encoded(signed()))


def test_parse_prefers_stripped_text_and_normalises_the_sender():
    parsed = mail_channel.parse(ACCOUNT, *encoded(signed()), Settings())
    [item] = parsed.messages
    assert item.text == "Where is it?"
    assert (item.peer.type, item.peer.target) == ("email", "alice@example.com")
    assert item.peer_display_name == "Alice Doe"
    assert item.provider_message_id == "<m1@example.com>"
    assert (item.self_address.type, item.self_address.target) == ("email", "support@shop.example")
    without_stripped = {k: v for k, v in signed().items() if k != "stripped-text"}
    [plain] = mail_channel.parse(ACCOUNT, *encoded(without_stripped), Settings()).messages
    assert plain.text.startswith("Where is it?\n\n> On Monday")


def test_multipart_attachments_become_hub_medias():
    files = [
        ("attachment-1", ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png")),
        ("attachment-2", ("notes.txt", b"hello", "text/plain")),
    ]
    request, body = encoded(signed(**{"attachment-count": "2"}), files)
    assert mail_channel.verify(ACCOUNT, request, body)
    [item] = mail_channel.parse(ACCOUNT, request, body, Settings()).messages
    assert [m.type for m in item.medias] == ["image/png", "text/plain"]
    assert all(m.url.startswith("/v1.0/media/") for m in item.medias)
    form = mail_channel.read_form(request, body)
    assert [(f.filename, f.data) for f in form.attachments] == [
        ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00"),
        ("notes.txt", b"hello"),
    ]
    assert [str(f.id) for f in form.attachments] == [m.url.rsplit("/", 1)[1] for m in item.medias]


def test_limits_are_413_and_bad_input_400():
    eleven = [(f"attachment-{i}", (f"{i}.txt", b"x", "text/plain")) for i in range(1, 12)]
    with pytest.raises(PayloadTooLarge):
        mail_channel.read_form(*encoded(signed(), eleven))
    big = [("attachment-1", ("big.bin", b"x" * (mail_channel.MAX_ATTACHMENT_BYTES + 1), "application/zip"))]
    with pytest.raises(PayloadTooLarge):
        mail_channel.read_form(*encoded(signed(), big))
    with pytest.raises(PayloadTooLarge):
        mail_channel.parse(ACCOUNT, *encoded(signed(**{"attachment-count": "11"})), Settings())
    for bad in ({"sender": "nobody", "from": "nobody"}, {"Message-Id": ""}, {"attachment-count": "x"}):
        with pytest.raises(BadRequest):
            mail_channel.parse(ACCOUNT, *encoded(signed(**bad)), Settings())
    with pytest.raises(BadRequest, match="NUL"):
        mail_channel.read_form(*encoded(signed(subject="a\x00b")))
    request = HookRequest(url="http://hub.test/hook", headers={"content-type": "application/json"})
    with pytest.raises(BadRequest):
        mail_channel.read_form(request, b"{}")


def test_addresses_and_titles():
    assert mail_channel.normalize_address(" Alice <Alice@Example.COM> ") == "alice@example.com"
    assert mail_channel.normalize_address("not an address") == ""
    assert auto_title("email", "alice@example.com", "Alice") == (
        "Email \u00b7 Alice (alice@example.com)",
        "Email conversation",
    )
    assert auto_title("email", "alice@example.com", "")[0] == "Email \u00b7 alice@example.com"
    assert auto_title("email", "", "")[0] == "Email \u00b7 Unknown"


def test_reply_threads_to_the_peer_and_keeps_one_message_id():
    message_id = str(uuid.uuid4())
    out = Outgoing(
        message_id=message_id,
        to="alice@example.com",
        sender="",
        text="It ships today.",
        medias=[],
        thread={"subject": "Order 42", "in_reply_to": "<m2@example.com>", "references": "<m1@example.com>"},
    )
    request = mail_channel.build_request(ACCOUNT, out, Settings())
    again = mail_channel.build_request(ACCOUNT, out, Settings())
    assert request.message_id == again.message_id == f"<{message_id}@shop.example>"
    parsed = email.message_from_bytes(request.message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Re: Order 42"
    assert parsed["In-Reply-To"] == "<m2@example.com>"
    assert parsed["References"] == "<m1@example.com> <m2@example.com>"
    assert parsed["From"] == "Support <support@shop.example>"
    assert (request.sender, request.recipients, request.port, request.security) == (
        "support@shop.example",
        ["alice@example.com"],
        2525,
        "none",
    )
    assert mail_channel.reply_subject("RE: Order 42") == "RE: Order 42"
