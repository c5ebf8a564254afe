"""The email channel end to end: signed Mailgun posts in, attachments kept and served by the
hub, replies out through a real aiosmtpd relay (parsed back with the `email` package), retries
and refusals of the relay, titles, media permissions, flows started by an email."""

from __future__ import annotations

import asyncio
import email
import email.policy
import secrets
import time
import uuid

import pytest

from api import temporal as hub_temporal
from api.simulate import email_fields
from api.smtp_sink import SmtpSink
from hub import accounts
from hub.tables import Activeflow, EmailMessage, Event, Message, StoredMedia
from tests.helpers import free_port, make_tenant, wait_for

pytestmark = pytest.mark.usefixtures("worker")

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


@pytest.fixture(scope="session")
async def relay():
    """A real SMTP relay (aiosmtpd) on a fixed port, so it can go away and come back."""
    sink = await SmtpSink(port=free_port()).start()
    yield sink
    await sink.stop()


@pytest.fixture
async def sink(relay):
    relay.reset()
    if relay._server is None:
        await relay.start()
    return relay


async def email_tenant(client, sink: SmtpSink, address: str = "support@shop.example"):
    tenant = await make_tenant()
    key = secrets.token_hex(16)
    response = await client.post(
        "/v1.0/accounts",
        json={
            "type": "email",
            "name": "Support",
            "address": address.upper(),
            "secret": key,
            "smtp_host": "127.0.0.1",
            "smtp_port": sink.port,
            "smtp_security": "none",
        },
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["address"] == address and "secret" not in account and "smtp_password" not in account
    return tenant, {**account, "secret": key}


async def post_email(client, account, files=None, **overrides):
    fields = email_fields(
        account,
        overrides.pop("sender", "alice@example.com"),
        overrides.pop("text", "Where is my order?"),
        overrides.pop("subject", "Order 42"),
        overrides.pop("name", "Alice"),
        message_id=overrides.pop("message_id", ""),
        timestamp=overrides.pop("timestamp", None),
        in_reply_to=overrides.pop("in_reply_to", ""),
    )
    fields.update(overrides)
    if files:
        fields.setdefault("attachment-count", str(len(files)))
    response = await client.post(f"/v1.0/hooks/accounts/{account['id']}", data=fields, files=files or None)
    return response, fields


async def stored(account) -> tuple[int, int, int]:
    account_id = uuid.UUID(account["id"])
    messages = await Message.count().where(Message.account_id == account_id)
    customer = uuid.UUID(account["customer_id"])
    return (
        messages,
        await EmailMessage.count().where(EmailMessage.customer_id == customer),
        await StoredMedia.count().where(StoredMedia.customer_id == customer),
    )


async def conversation_of(client, tenant, message_id_header: str) -> dict:
    row = await Message.select().where(Message.provider_message_id == message_id_header).first()
    response = await client.get(f"/v1.0/conversations/{row['conversation_id']}", headers=tenant.admin.headers)
    return response.json()


async def reply(client, tenant, conversation_id: str, text: str = "It ships today.", medias=None) -> dict:
    response = await client.post(
        f"/v1.0/conversations/{conversation_id}/messages",
        json={"text": text, "medias": medias or []},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def settled(client, tenant, message_id: str) -> dict:
    async def check():
        got = (
            await client.get(f"/v1.0/conversation_messages/{message_id}", headers=tenant.admin.headers)
        ).json()
        return got if got["status"] != "progressing" else None

    return await wait_for(check, within=30)


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- inbound -----------------------------------------------------------------------------------


async def test_bad_signature_or_stale_timestamp_is_401_and_stores_nothing(client, sink):
    tenant, account = await email_tenant(client, sink)
    files = [("attachment-1", ("a.png", PNG, "image/png"))]
    forged, _ = await post_email(client, account, files, signature="0" * 64)
    stale, _ = await post_email(client, account, files, timestamp=int(time.time()) - 6 * 60)
    other_key, _ = await post_email(client, {**account, "secret": "not-the-key"}, files)
    for response in (forged, stale, other_key):
        assert response.status_code == 401, response.text
    assert await stored(account) == (0, 0, 0)
    ok, _ = await post_email(client, account, files)
    assert ok.status_code == 200, ok.text
    assert await stored(account) == (1, 1, 1)


async def test_same_message_id_twice_stores_one_message(client, sink):
    tenant, account = await email_tenant(client, sink)
    files = [("attachment-1", ("a.png", PNG, "image/png"))]
    first, fields = await post_email(client, account, files, message_id="<dup-1@example.com>")
    again, _ = await post_email(client, account, files, message_id="<dup-1@example.com>")
    assert (first.status_code, again.status_code) == (200, 200)
    assert await stored(account) == (1, 1, 1)
    conversation = await conversation_of(client, tenant, "<dup-1@example.com>")
    assert conversation["type"] == "email" and conversation["peer"]["target"] == "alice@example.com"


async def test_titles(client, sink):
    tenant, account = await email_tenant(client, sink)
    await post_email(client, account, sender="Alice@Example.com", name="Alice", message_id="<t1@x.com>")
    await post_email(client, account, sender="bob@example.com", name="", message_id="<t2@x.com>")
    contact = await client.post(
        "/v1.0/contacts",
        json={"name": "Carol", "addresses": [{"type": "email", "target": "CAROL@example.com"}]},
        headers=tenant.admin.headers,
    )
    assert contact.status_code == 200, contact.text
    await post_email(client, account, sender="carol@example.com", name="", message_id="<t3@x.com>")
    titles = [(await conversation_of(client, tenant, f"<t{i}@x.com>")) for i in (1, 2, 3)]
    assert [(c["name"], c["detail"]) for c in titles] == [
        ("Email \u00b7 Alice (alice@example.com)", "Email conversation"),
        ("Email \u00b7 bob@example.com", "Email conversation"),
        ("Email \u00b7 Carol (carol@example.com)", "Email conversation"),
    ]
    assert accounts.CONVERSATION_TYPE["email"] == "email"


async def test_stripped_text_is_the_message_text(client, sink):
    tenant, account = await email_tenant(client, sink)
    await post_email(
        client,
        account,
        message_id="<s1@x.com>",
        **{"body-plain": "Thanks!\n\n> earlier", "stripped-text": "Thanks!"},
    )
    row = await Message.select().where(Message.provider_message_id == "<s1@x.com>").first()
    assert row["text"] == "Thanks!"


async def test_attachments_are_stored_served_and_tenant_scoped(client, sink):
    tenant, account = await email_tenant(client, sink)
    other, _ = await email_tenant(client, sink)
    files = [
        ("attachment-1", ("photo.png", PNG, "image/png")),
        ("attachment-2", ("notes.txt", b"line one\n", "text/plain")),
    ]
    response, _ = await post_email(client, account, files, message_id="<att@x.com>")
    assert response.status_code == 200, response.text
    row = await Message.select().where(Message.provider_message_id == "<att@x.com>").first()
    message = (
        await client.get(f"/v1.0/conversation_messages/{row['id']}", headers=tenant.agent.headers)
    ).json()
    assert [m["type"] for m in message["medias"]] == ["image/png", "text/plain"]
    photo, notes = (m["url"] for m in message["medias"])
    assert photo.startswith("/v1.0/media/")
    got = await client.get(photo, headers=tenant.agent.headers)
    assert (got.status_code, got.content, got.headers["content-type"]) == (200, PNG, "image/png")
    text = await client.get(notes, headers=tenant.agent.headers)
    assert text.content == b"line one\n" and text.headers["content-type"].startswith("text/plain")
    assert text.headers["content-disposition"].startswith("attachment")
    foreign = await client.get(photo, headers=other.admin.headers)
    assert foreign.status_code == 404 and foreign.json()["error"]["reason"] == "not_found"
    assert (await client.get(photo)).status_code == 401
    assert (await client.get("/v1.0/media/not-a-uuid", headers=tenant.agent.headers)).status_code == 400


async def test_deleting_the_message_or_its_conversation_removes_its_media(client, sink):
    tenant, account = await email_tenant(client, sink)
    files = [("attachment-1", ("photo.png", PNG, "image/png"))]
    await post_email(client, account, files, message_id="<del1@x.com>", subject="One")
    await post_email(client, account, files, message_id="<del2@x.com>", subject="One")
    first = await Message.select().where(Message.provider_message_id == "<del1@x.com>").first()
    second = await Message.select().where(Message.provider_message_id == "<del2@x.com>").first()
    assert first["conversation_id"] == second["conversation_id"]
    urls = {}
    for row in (first, second):
        got = await client.get(f"/v1.0/conversation_messages/{row['id']}", headers=tenant.agent.headers)
        urls[row["id"]] = got.json()["medias"][0]["url"]
        assert (await client.get(urls[row["id"]], headers=tenant.agent.headers)).status_code == 200
    deleted = await client.delete(f"/v1.0/conversation_messages/{first['id']}", headers=tenant.admin.headers)
    assert deleted.status_code == 200, deleted.text
    assert (await client.get(urls[first["id"]], headers=tenant.agent.headers)).status_code == 404
    assert await StoredMedia.count().where(StoredMedia.message_id == first["id"]) == 0
    assert (await client.get(urls[second["id"]], headers=tenant.agent.headers)).status_code == 200
    conversation_id = first["conversation_id"]
    gone = await client.delete(f"/v1.0/conversations/{conversation_id}", headers=tenant.admin.headers)
    assert gone.status_code == 200, gone.text
    assert (await client.get(urls[second["id"]], headers=tenant.agent.headers)).status_code == 404
    assert await StoredMedia.count().where(StoredMedia.conversation_id == conversation_id) == 0


async def test_too_many_or_too_large_attachments_are_413_and_store_nothing(client, sink):
    tenant, account = await email_tenant(client, sink)
    eleven = [(f"attachment-{i}", (f"{i}.txt", b"x", "text/plain")) for i in range(1, 12)]
    response, _ = await post_email(client, account, eleven)
    assert response.status_code == 413, response.text
    big = [("attachment-1", ("big.bin", b"\x00" * (10 * 1024 * 1024 + 1), "application/octet-stream"))]
    response, _ = await post_email(client, account, big)
    assert response.status_code == 413, response.text
    assert await stored(account) == (0, 0, 0)
    ten = [
        (f"attachment-{i}", (f"{i}.bin", b"\x00\x01" * 100, "application/octet-stream")) for i in range(1, 11)
    ]
    response, _ = await post_email(client, account, ten)
    assert response.status_code == 200 and await stored(account) == (1, 1, 10)


MEDIA_CALLERS = {"admin": 200, "manager": 200, "owner": 200, "other_agent": 200, "foreign_admin": 404}


@pytest.mark.parametrize(("caller_name", "status"), MEDIA_CALLERS.items())
async def test_media_permission_matrix(client, sink, caller_name, status):
    """Media follow the conversation's messages: any agent of the customer reads them (as it
    reads the messages), another customer's agents get 404."""
    tenant, account = await email_tenant(client, sink)
    foreign, _ = await email_tenant(client, sink)
    response, _ = await post_email(client, account, [("attachment-1", ("a.png", PNG, "image/png"))])
    assert response.status_code == 200
    conversation = await conversation_of(client, tenant, await last_header(account))
    assign = await client.put(
        f"/v1.0/conversations/{conversation['id']}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assign.status_code == 200
    [media] = await StoredMedia.select().where(StoredMedia.customer_id == tenant.customer_id)
    caller = {
        "admin": tenant.admin,
        "manager": tenant.manager,
        "owner": tenant.agent,
        "other_agent": tenant.other_agent,
        "foreign_admin": foreign.admin,
    }[caller_name]
    got = await client.get(f"/v1.0/media/{media['id']}", headers=caller.headers)
    assert got.status_code == status, got.text
    if status == 200:
        assert got.content == PNG


async def last_header(account) -> str:
    row = (
        await Message.select(Message.provider_message_id)
        .where(Message.account_id == uuid.UUID(account["id"]))
        .order_by(Message.tm_create, ascending=False)
        .first()
    )
    return row["provider_message_id"]


# --- outbound ----------------------------------------------------------------------------------


async def test_reply_threads_to_the_peers_last_message(client, sink):
    tenant, account = await email_tenant(client, sink)
    await post_email(client, account, subject="Order 42", message_id="<first@example.com>")
    await post_email(
        client,
        account,
        subject="Re: Order 42",
        message_id="<second@example.com>",
        References="<first@example.com>",
        **{"In-Reply-To": "<first@example.com>"},
    )
    conversation = await conversation_of(client, tenant, "<second@example.com>")
    assert conversation == await conversation_of(client, tenant, "<first@example.com>")
    sent = await reply(client, tenant, conversation["id"])
    done = await settled(client, tenant, sent["id"])
    assert done["status"] == "done", done
    [received] = sink.received
    assert received.sender == "support@shop.example" and received.recipients == ["alice@example.com"]
    mail = parsed(received.data)
    assert mail["In-Reply-To"] == "<second@example.com>"
    assert mail["References"].split() == ["<first@example.com>", "<second@example.com>"]
    assert mail["Subject"] == "Re: Order 42"
    assert mail["From"].addresses[0].addr_spec == "support@shop.example"
    assert mail["Message-ID"] == done["provider_message_id"]
    assert mail.get_body(("plain",)).get_content().strip() == "It ships today."


async def test_reply_attaches_hub_media_and_refuses_another_customers(client, sink):
    tenant, account = await email_tenant(client, sink)
    other, other_account = await email_tenant(client, sink)
    response, _ = await post_email(client, account, [("attachment-1", ("photo.png", PNG, "image/png"))])
    assert response.status_code == 200
    await post_email(client, other_account, [("attachment-1", ("secret.png", b"secret", "image/png"))])
    [own] = await StoredMedia.select().where(StoredMedia.customer_id == tenant.customer_id)
    [foreign] = await StoredMedia.select().where(StoredMedia.customer_id == other.customer_id)
    conversation = await conversation_of(client, tenant, await last_header(account))
    sent = await reply(
        client,
        tenant,
        conversation["id"],
        medias=[{"type": "image/png", "url": f"http://hub.test/v1.0/media/{own['id']}"}],
    )
    assert (await settled(client, tenant, sent["id"]))["status"] == "done"
    [attachment] = list(parsed(sink.received[0].data).iter_attachments())
    assert attachment.get_content() == PNG and attachment.get_filename() == "photo.png"
    stolen = await reply(
        client,
        tenant,
        conversation["id"],
        medias=[{"type": "image/png", "url": f"http://hub.test/v1.0/media/{foreign['id']}"}],
    )
    refused = await settled(client, tenant, stolen["id"])
    assert refused["status"] == "failed" and "not a media of this customer" in refused["reason"]
    assert len(sink.received) == 1


async def test_relay_down_for_a_while_then_done_once(client, sink, temporal_env):
    tenant, account = await email_tenant(client, sink)
    await post_email(client, account, message_id="<down@example.com>")
    conversation = await conversation_of(client, tenant, "<down@example.com>")
    await sink.stop()
    sent = await reply(client, tenant, conversation["id"])
    handle = temporal_env.client.get_workflow_handle(f"send-{sent['id']}")

    async def retried() -> bool:
        described = await handle.describe()
        return any(p.attempt >= 2 for p in described.raw_description.pending_activities)

    await wait_for(retried, within=20, interval=0.05)
    await sink.start()
    done = await settled(client, tenant, sent["id"])
    assert done["status"] == "done", done
    assert len(sink.received) == 1
    assert parsed(sink.received[0].data)["Message-ID"] == done["provider_message_id"]


async def test_relay_4xx_is_retried_and_delivered_once(client, sink):
    tenant, account = await email_tenant(client, sink)
    await post_email(client, account, message_id="<busy@example.com>")
    conversation = await conversation_of(client, tenant, "<busy@example.com>")
    sink.fail_next, sink.fail_answer = 2, "451 4.7.1 Greylisted, try again later"
    sent = await reply(client, tenant, conversation["id"])
    done = await settled(client, tenant, sent["id"])
    assert done["status"] == "done" and sink.fail_next == 0
    assert len(sink.received) == 1


async def test_relay_5xx_fails_with_its_answer(client, sink):
    tenant, account = await email_tenant(client, sink)
    await post_email(client, account, message_id="<spam@example.com>")
    conversation = await conversation_of(client, tenant, "<spam@example.com>")
    sink.fail_next, sink.fail_answer = 1, "554 5.7.1 Message rejected as spam"
    sent = await reply(client, tenant, conversation["id"])
    failed = await settled(client, tenant, sent["id"])
    assert failed["status"] == "failed"
    assert "554" in failed["reason"] and "rejected as spam" in failed["reason"]
    assert sink.received == []


async def test_account_fields_are_validated(client, sink):
    tenant = await make_tenant()
    base = {"type": "email", "address": "a@shop.example", "smtp_host": "127.0.0.1", "secret": "k"}
    for bad in (
        {"address": "not-an-address"},
        {"address": ""},
        {"smtp_host": ""},
        {"smtp_host": "bad host"},
        {"smtp_security": "ssl"},
        {"smtp_port": 70000},
        {"number": "+15550001111"},
    ):
        response = await client.post("/v1.0/accounts", json={**base, **bad}, headers=tenant.admin.headers)
        assert response.status_code == 400, (bad, response.text)
    sms = await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"smtp_host": "x.example"},
        headers=tenant.admin.headers,
    )
    assert sms.status_code == 400
    made = await client.post("/v1.0/accounts", json=base, headers=tenant.admin.headers)
    assert made.status_code == 200 and (made.json()["smtp_port"], made.json()["smtp_security"]) == (
        587,
        "starttls",
    )
    changed = await client.put(
        f"/v1.0/accounts/{made.json()['id']}",
        json={"smtp_security": "tls", "smtp_port": 0},
        headers=tenant.admin.headers,
    )
    assert changed.status_code == 200 and changed.json()["smtp_port"] == 465
    bad_update = await client.put(
        f"/v1.0/accounts/{made.json()['id']}", json={"address": "nope"}, headers=tenant.admin.headers
    )
    assert bad_update.status_code == 400


# --- events and flows ----------------------------------------------------------------------------


async def test_email_events_and_flow_behave_like_other_channels(client, sink, temporal_env):
    tenant, account = await email_tenant(client, sink)
    flow = await client.post(
        "/v1.0/flows",
        json={
            "name": "email auto-reply",
            "actions": [
                {"id": "reply", "type": "conversation_send", "option": {"text": "Got: ${message.text}"}}
            ],
        },
        headers=tenant.admin.headers,
    )
    assert flow.status_code == 200, flow.text
    attach = await client.put(
        f"/v1.0/accounts/{account['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )
    assert attach.status_code == 200
    response, _ = await post_email(client, account, text="hello by email", message_id="<flow@example.com>")
    assert response.status_code == 200

    async def ended():
        rows = await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id)
        return rows if rows and rows[0]["status"] != "running" else None

    [run] = await wait_for(ended, within=30)
    assert run["status"] == "ended"
    await wait_for(lambda: asyncio.sleep(0, result=len(sink.received) == 1))
    mail = parsed(sink.received[0].data)
    assert mail.get_body(("plain",)).get_content().strip() == "Got: hello by email"
    assert mail["In-Reply-To"] == "<flow@example.com>"
    described = await temporal_env.client.get_workflow_handle(run["workflow_id"]).describe()
    attributes = described.typed_search_attributes
    assert {a.name for a in hub_temporal.SEARCH_ATTRIBUTES} <= {p.key.name for p in attributes}
    assert attributes.get(hub_temporal.FLOW_ID) == flow.json()["id"]
    assert attributes.get(hub_temporal.CUSTOMER_ID) == str(tenant.customer_id)
    assert attributes.get(hub_temporal.ACCOUNT_ID) == account["id"]
    assert attributes.get(hub_temporal.CONVERSATION_ID) == str(run["conversation_id"])
    events = await Event.select(Event.type, Event.data).where(Event.conversation_id == run["conversation_id"])
    types = [e["type"] for e in events]
    assert "conversation_created" in types and "conversation_message_created" in types
    received = [e for e in events if e["type"] == "conversation_message_received"]
    assert len(received) == 1 and '"type":"email"' in received[0]["data"]
