"""Outgoing messages through Temporal to the fake providers, status callbacks, idempotency."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from hub.tables import Conversation, Event, Message
from tests.helpers import (
    line_event,
    make_line_account,
    make_tenant,
    open_conversation,
    signed_line,
    signed_sms,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("worker")


async def sms_conversation(client, tenant, sender="+14155551234") -> str:
    return str(await open_conversation(client, tenant, sender))


async def send(client, tenant, conversation_id, text="hello", **kwargs):
    response = await client.post(
        f"/v1.0/conversations/{conversation_id}/messages",
        json={"text": text},
        headers=tenant.admin.headers | kwargs.pop("headers", {}),
        **kwargs,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def settled(client, tenant, message_id) -> dict | None:
    response = await client.get(f"/v1.0/conversation_messages/{message_id}", headers=tenant.admin.headers)
    message = response.json()
    return message if message["status"] != "progressing" else None


async def test_send_sms_reaches_provider_and_becomes_done(client, fake_sms):
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id, text="Your order has shipped!")
    assert message["status"] == "progressing" and message["direction"] == "outgoing"

    final = await wait_for(lambda: settled(client, tenant, message["id"]))
    assert final["status"] == "done"
    [received] = fake_sms.received
    assert (received["to"], received["from"], received["body"]) == (
        "+14155551234",
        "+15550001000",
        "Your order has shipped!",
    )
    assert final["provider_message_id"] == received["sid"]
    types = await Event.select(Event.type).where(Event.customer_id == tenant.customer_id).output(as_list=True)
    assert types.count("conversation_message_updated") == 1


async def test_provider_500_twice_then_accepts(client, fake_sms):
    fake_sms.control({"fail_next": 2, "fail_status": 500})
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id, text="retry me")
    final = await wait_for(lambda: settled(client, tenant, message["id"]))
    assert final["status"] == "done"
    assert fake_sms.fail_next == 0
    assert [r["body"] for r in fake_sms.received] == ["retry me"]


async def test_provider_400_fails_with_reason(client, fake_sms):
    fake_sms.control({"reject_next": 1, "reject_status": 400})
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id, text="to nowhere")
    final = await wait_for(lambda: settled(client, tenant, message["id"]))
    assert final["status"] == "failed"
    assert "400" in final["reason"] and "not a valid phone number" in final["reason"]
    assert fake_sms.received == []


async def test_provider_down_for_every_attempt_fails_after_the_schedule(client, fake_sms, settings):
    fake_sms.control({"fail_next": 100, "fail_status": 503})
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id)
    final = await wait_for(lambda: settled(client, tenant, message["id"]), within=30)
    assert final["status"] == "failed"
    assert f"after {settings.send_max_attempts} attempts" in final["reason"]
    assert fake_sms.received == []


async def test_status_callback_undelivered_fails_the_message(client, fake_sms, settings):
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id)
    assert (await wait_for(lambda: settled(client, tenant, message["id"])))["status"] == "done"
    [received] = fake_sms.received
    hook = f"{settings.public_url}/v1.0/hooks/accounts/{tenant.account['id']}"
    assert received["status_callback"] == f"{hook}?message_id={message['id']}"

    # The fake signs the callback for the hub's public URL; deliver it to the test server.
    callback_params = {
        "MessageSid": received["sid"],
        "AccountSid": received["account_sid"],
        "MessageStatus": "undelivered",
        "ErrorCode": "30003",
    }
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, callback_params)
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    final = (
        await client.get(f"/v1.0/conversation_messages/{message['id']}", headers=tenant.admin.headers)
    ).json()
    assert final["status"] == "failed" and "30003" in final["reason"]

    # A forged callback changes nothing.
    forged = dict(headers, **{"X-Twilio-Signature": "Zm9yZ2Vk"})
    delivered = dict(callback_params, MessageStatus="delivered")
    path, body, _ = signed_sms(tenant.account["id"], tenant.auth_token, delivered)
    assert (await client.post(path, content=body, headers=forged)).status_code == 401
    row = await Message.select(Message.status).where(Message.id == uuid.UUID(message["id"])).first()
    assert row["status"] == "failed"


async def test_status_callback_sent_by_the_fake_provider(client, fake_sms, fakes):
    """The fake provider's own signed callback request is accepted and settles the message."""
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    message = await send(client, tenant, conversation_id)
    await wait_for(lambda: settled(client, tenant, message["id"]))
    [received] = fake_sms.received
    sms_url = f"http://127.0.0.1:{fakes.servers[0].config.port}"
    # The callback URL names the message (signed with the rest of the URL).
    path = f"/v1.0/hooks/accounts/{tenant.account['id']}?message_id={message['id']}"
    async with httpx.AsyncClient(base_url=sms_url) as http:
        answer = await http.post(
            "/_fake/callback",
            json={
                "sid": received["sid"],
                "status": "failed",
                "token": tenant.auth_token,
                "error_code": "30005",
                # The hub checks signatures against its public URL; the request reaches the test port.
                "post_to": f"{client.base_url}{path}",
            },
        )
    assert answer.json() == {"status_code": 200}
    row = (
        await Message.select(Message.status, Message.reason)
        .where(Message.id == uuid.UUID(message["id"]))
        .first()
    )
    assert row["status"] == "failed" and "30005" in row["reason"]


async def test_idempotency_key_returns_first_message_and_sends_once(client, fake_sms):
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
    results = await asyncio.gather(
        *[send(client, tenant, conversation_id, text="only once", headers=key) for _ in range(5)]
    )
    assert len({r["id"] for r in results}) == 1
    await wait_for(lambda: settled(client, tenant, results[0]["id"]))
    assert [r["body"] for r in fake_sms.received] == ["only once"]
    count = await Message.count().where(Message.conversation_id == uuid.UUID(conversation_id))
    assert count == 2  # the inbound one and a single outgoing one


async def test_send_to_assigned_conversation_works(client, fake_sms):
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    assign = await client.put(
        f"/v1.0/conversations/{conversation_id}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assign.status_code == 200
    response = await client.post(
        f"/v1.0/conversations/{conversation_id}/messages",
        json={"text": "agent here"},
        headers=tenant.agent.headers,
    )
    assert response.status_code == 200
    final = await wait_for(lambda: settled(client, tenant, response.json()["id"]))
    assert final["status"] == "done"


async def test_send_validation(client):
    tenant = await make_tenant()
    conversation_id = await sms_conversation(client, tenant)
    url = f"/v1.0/conversations/{conversation_id}/messages"
    for body in ({}, {"text": ""}, {"text": 5}, {"text": "x" * 5001}, {"medias": [{"url": "ftp://x"}]}):
        response = await client.post(url, json=body, headers=tenant.admin.headers)
        assert response.status_code == 400, (body, response.text)
    other = await make_tenant()
    response = await client.post(url, json={"text": "hi"}, headers=other.admin.headers)
    assert response.status_code == 404
    assert await Message.count().where(Message.conversation_id == uuid.UUID(conversation_id)) == 1


# --- LINE ----------------------------------------------------------------------------------


async def test_line_push_reaches_provider(client, fake_line):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    path, body, headers = signed_line(account["id"], secret, [line_event("message", "Uline-user-1", "hi")])
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    conversation = await Conversation.select().where(Conversation.account_id == account["id"]).first()
    message = await send(client, tenant, conversation["id"], text="hello over LINE")
    final = await wait_for(lambda: settled(client, tenant, message["id"]))
    assert final["status"] == "done"
    [received] = fake_line.received
    assert received["to"] == "Uline-user-1"
    assert received["messages"] == [{"type": "text", "text": "hello over LINE"}]


async def test_line_forged_signature_is_401_and_stores_nothing(client):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    path, body, headers = signed_line(account["id"], "wrong-secret", [line_event("message", "Ux", "hi")])
    assert (await client.post(path, content=body, headers=headers)).status_code == 401
    _, _, good_headers = signed_line(account["id"], secret, [line_event("message", "Ux", "other")])
    assert (await client.post(path, content=body, headers=good_headers)).status_code == 401
    missing = {"Content-Type": "application/json"}
    assert (await client.post(path, content=body, headers=missing)).status_code == 401
    assert await Conversation.count().where(Conversation.account_id == account["id"]) == 0
    assert await Event.count().where(Event.customer_id == tenant.customer_id) == 0


async def test_line_follow_titles_and_unfollow_keeps_history(client, fake_line):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    fake_line.profiles["Ualice0000"] = "Alice"
    events = [line_event("follow", "Ualice0000"), line_event("follow", "Unobody0000")]
    path, body, headers = signed_line(account["id"], secret, events)
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    rows = await Conversation.select().where(Conversation.account_id == account["id"])
    titles = {r["peer_target"]: (r["name"], r["detail"]) for r in rows}
    assert titles == {
        "Ualice0000": ("LINE \u00b7 Alice", "LINE conversation"),
        "Unobody0000": ("LINE \u00b7 Unknown", "LINE conversation"),
    }
    for name, detail in titles.values():
        assert "Unobody0000" not in name + detail and "Ualice0000" not in name + detail

    path, body, headers = signed_line(
        account["id"],
        secret,
        [line_event("message", "Ualice0000", "hello"), line_event("unfollow", "Ualice0000")],
    )
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    rows = await Conversation.select().where(
        Conversation.account_id == account["id"], Conversation.tm_delete.is_null()
    )
    assert len(rows) == 2
    assert await Message.count().where(Message.account_id == account["id"]) == 1


async def test_line_image_and_redelivery(client):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    image = line_event(
        "message", "Uimg0000", message={"id": "4711", "type": "image", "contentProvider": {"type": "line"}}
    )
    path, body, headers = signed_line(account["id"], secret, [image])
    for _ in range(2):  # LINE redelivers with the same webhookEventId
        assert (await client.post(path, content=body, headers=headers)).status_code == 200
    [message] = await Message.select().where(Message.account_id == account["id"])
    assert "/v2/bot/message/4711/content" in message["medias"]
    assert message["direction"] == "incoming"
