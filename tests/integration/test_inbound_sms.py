"""Inbound SMS through the provider hook: signatures, dedupe, room matching, titles, events."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from hub import contacts
from hub.tables import Conversation, Event, Message
from tests.helpers import make_tenant, signed_sms, sms_params


async def post_sms(client, tenant, **kwargs):
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(**kwargs))
    return await client.post(path, content=body, headers=headers)


async def conversations_of(tenant) -> list[dict]:
    return await Conversation.select().where(Conversation.customer_id == tenant.customer_id)


async def test_inbound_sms_creates_conversation_message_and_events(client):
    tenant = await make_tenant()
    response = await post_sms(client, tenant, sender="+1 (415) 555-1234", body="hi there")
    assert response.status_code == 200, response.text

    [conversation] = await conversations_of(tenant)
    assert conversation["peer_target"] == "+14155551234"
    assert conversation["self_target"] == "+15550001000"
    assert conversation["type"] == "message"
    [message] = await Message.select().where(Message.conversation_id == conversation["id"])
    assert (message["direction"], message["status"], message["text"]) == ("incoming", "done", "hi there")

    types = (
        await Event.select(Event.type)
        .where(Event.customer_id == tenant.customer_id)
        .order_by(Event.seq)
        .output(as_list=True)
    )
    assert types == [
        "conversation_created",
        "conversation_message_created",
        "conversation_message_received",
    ]

    # Readable through the API, addresses and all.
    got = (await client.get(f"/v1.0/conversations/{conversation['id']}", headers=tenant.admin.headers)).json()
    assert got["peer"]["target"] == "+14155551234"
    assert got["self"]["target"] == "+15550001000"
    assert got["owner_type"] == "" and got["owner_id"] == str(uuid.UUID(int=0))
    messages = (
        await client.get(f"/v1.0/conversations/{conversation['id']}/messages", headers=tenant.admin.headers)
    ).json()
    assert [m["text"] for m in messages["result"]] == ["hi there"]
    assert messages["result"][0]["source"]["target"] == "+14155551234"


async def test_second_message_from_same_peer_joins_the_room(client):
    tenant = await make_tenant()
    assert (await post_sms(client, tenant, body="one")).status_code == 200
    assert (await post_sms(client, tenant, body="two")).status_code == 200
    [conversation] = await conversations_of(tenant)
    count = await Message.count().where(Message.conversation_id == conversation["id"])
    assert count == 2
    types = await Event.select(Event.type).where(Event.customer_id == tenant.customer_id).output(as_list=True)
    assert types.count("conversation_created") == 1


async def test_fifty_concurrent_first_messages_make_one_conversation(client):
    tenant = await make_tenant()
    responses = await asyncio.gather(*[post_sms(client, tenant, body=f"m{i}") for i in range(50)])
    assert [r.status_code for r in responses] == [200] * 50
    [conversation] = await conversations_of(tenant)
    count = await Message.count().where(Message.conversation_id == conversation["id"])
    assert count == 50
    created = await Event.count().where(
        Event.customer_id == tenant.customer_id, Event.type == "conversation_created"
    )
    assert created == 1


async def test_same_message_sid_twice_and_concurrently_stores_one_message(client):
    tenant = await make_tenant()
    params = sms_params(sid="SMduplicate" + uuid.uuid4().hex)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    first = await client.post(path, content=body, headers=headers)
    again = await client.post(path, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)

    params2 = sms_params(sid="SMconcurrent" + uuid.uuid4().hex, sender="+14155550000")
    path2, body2, headers2 = signed_sms(tenant.account["id"], tenant.auth_token, params2)
    burst = await asyncio.gather(*[client.post(path2, content=body2, headers=headers2) for _ in range(20)])
    assert {r.status_code for r in burst} == {200}

    assert await Message.count().where(Message.account_id == tenant.account["id"]) == 2
    received = await Event.count().where(
        Event.customer_id == tenant.customer_id, Event.type == "conversation_message_received"
    )
    assert received == 2
    assert len(await conversations_of(tenant)) == 2


async def test_bad_or_missing_signature_is_401_and_stores_nothing(client):
    tenant = await make_tenant()
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params())
    forged = dict(headers, **{"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    missing = {k: v for k, v in headers.items() if k != "X-Twilio-Signature"}
    _, other_body, _ = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(body="tampered"))
    wrong_key_path, wrong_key_body, wrong_key_headers = signed_sms(
        tenant.account["id"], "not-the-token", sms_params()
    )

    for h, b in ((forged, body), (missing, body), (headers, other_body), (wrong_key_headers, wrong_key_body)):
        response = await client.post(path, content=b, headers=h)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["reason"] == "unauthorized"

    assert await conversations_of(tenant) == []
    assert await Message.count().where(Message.account_id == tenant.account["id"]) == 0
    assert await Event.count().where(Event.customer_id == tenant.customer_id) == 0


async def test_mms_media_are_stored(client):
    tenant = await make_tenant()
    media = [("image/jpeg", "https://media.example/a.jpg"), ("image/png", "https://media.example/b.png")]
    assert (await post_sms(client, tenant, body="", media=media)).status_code == 200
    [conversation] = await conversations_of(tenant)
    page = (
        await client.get(f"/v1.0/conversations/{conversation['id']}/messages", headers=tenant.agent.headers)
    ).json()
    assert page["result"][0]["medias"] == [
        {"type": "image/jpeg", "url": "https://media.example/a.jpg"},
        {"type": "image/png", "url": "https://media.example/b.png"},
    ]


async def test_unknown_account_is_404_and_malformed_hook_body_is_400(client):
    tenant = await make_tenant()
    path, body, headers = signed_sms(uuid.uuid4(), tenant.auth_token, sms_params())
    assert (await client.post(path, content=body, headers=headers)).status_code == 404

    path, _, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params())
    for bad in (b"\xff\xfe", b"=&=&&", b"MessageSid=x&NumMedia=lots"):
        response = await client.post(path, content=bad, headers=headers)
        assert response.status_code in (400, 401), response.text


async def test_deleted_conversation_never_matches(client):
    tenant = await make_tenant()
    assert (await post_sms(client, tenant)).status_code == 200
    [first] = await conversations_of(tenant)
    response = await client.delete(f"/v1.0/conversations/{first['id']}", headers=tenant.admin.headers)
    assert response.status_code == 200 and response.json()["tm_delete"]
    assert (await post_sms(client, tenant)).status_code == 200
    rows = await conversations_of(tenant)
    assert len(rows) == 2
    live = [r for r in rows if r["tm_delete"] is None]
    assert len(live) == 1 and live[0]["id"] != first["id"]


async def test_contact_name_in_title(client):
    tenant = await make_tenant()
    await contacts.create_contact(
        tenant.customer_id, "Alice", "", [{"type": "tel", "target": "+1 415-555-1234"}]
    )
    assert (await post_sms(client, tenant, sender="+14155551234")).status_code == 200
    [conversation] = await conversations_of(tenant)
    assert conversation["name"] == "SMS \u00b7 Alice (+14155551234)"
    assert conversation["detail"] == "SMS conversation"


async def test_declared_oversized_sms_body_is_413_before_it_is_read(client):
    """Only email needs the hook's large body limit; an SMS post declaring more than 10 MB is
    refused from its headers, without the server waiting for (or reading) the body."""
    tenant = await make_tenant()
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params())
    url = httpx.URL(str(client.base_url))
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.host}", "Content-Length: 20000000", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=15)
    finally:
        writer.close()
    assert status_line.split()[1] == b"413", status_line
    assert await conversations_of(tenant) == []
