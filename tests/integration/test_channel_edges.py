"""Channel edge cases against the fake providers, which enforce the providers' published limits
(line/line-openapi, twilio/twilio-oai): LINE content host, group chats, push splitting, media
rules, 409 retries, non-text summaries, text limits, delivery status and early callbacks, batches."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from temporalio.service import RPCError, RPCStatusCode
from twilio.request_validator import RequestValidator

from activities.providers import Outgoing, push_line
from api import temporal as hub_temporal
from hub.tables import Activeflow, Conversation, Event, Message
from tests.helpers import (
    PUBLIC_URL,
    line_event,
    make_line_account,
    make_tenant,
    open_conversation,
    signed_line,
    signed_sms,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("worker")
IMAGE = "https://cdn.example.com/pic-{}.png"


async def post_line(client, account, secret, events) -> httpx.Response:
    path, body, headers = signed_line(account["id"], secret, events)
    return await client.post(path, content=body, headers=headers)


async def line_conversation(client, tenant, user_id="Uedge0001") -> tuple[dict, uuid.UUID]:
    account, secret = await make_line_account(tenant.customer_id)
    assert (
        await post_line(client, account, secret, [line_event("message", user_id, "hi")])
    ).status_code == 200
    row = await Conversation.select(Conversation.id).where(Conversation.account_id == account["id"]).first()
    return account, row["id"]


async def send(client, tenant, conversation_id, body: dict) -> httpx.Response:
    return await client.post(
        f"/v1.0/conversations/{conversation_id}/messages", json=body, headers=tenant.admin.headers
    )


async def settled(client, tenant, message_id) -> dict | None:
    response = await client.get(f"/v1.0/conversation_messages/{message_id}", headers=tenant.admin.headers)
    message = response.json()
    return message if message["status"] != "progressing" else None


def group_event(kind: str, group_id: str, user_id: str = "", text: str = "", source_type="group", **extra):
    event = line_event(kind, user_id or "Uunused", text, **extra)
    key = "groupId" if source_type == "group" else "roomId"
    event["source"] = {"type": source_type, key: group_id, **({"userId": user_id} if user_id else {})}
    return event


async def attach_flow(client, tenant, account_id, text: str) -> None:
    actions = [{"id": "reply", "type": "conversation_send", "option": {"text": text}}]
    flow = await client.post(
        "/v1.0/flows", json={"name": "edge", "actions": actions}, headers=tenant.admin.headers
    )
    assert flow.status_code == 200, flow.text
    attached = await client.put(
        f"/v1.0/accounts/{account_id}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )
    assert attached.status_code == 200, attached.text


# --- 1. LINE content comes from the data host ------------------------------------------------


async def test_line_content_url_uses_the_data_host(client, settings):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    image = line_event(
        "message", "Ucontent01", message={"id": "9001", "type": "image", "contentProvider": {"type": "line"}}
    )
    assert (await post_line(client, account, secret, [image])).status_code == 200
    [message] = await Message.select().where(Message.account_id == account["id"])
    [media] = json.loads(message["medias"])
    assert settings.resolved_line_data_api_url != settings.resolved_line_api_url
    assert media["url"] == f"{settings.resolved_line_data_api_url}/v2/bot/message/9001/content"
    async with httpx.AsyncClient() as http:
        content = await http.get(media["url"], headers={"Authorization": f"Bearer {account['token']}"})
    assert content.status_code == 200 and content.content.startswith(b"\x89PNG")


# --- 2. group and room chats -------------------------------------------------------------------


async def test_line_group_is_its_own_conversation_and_flow_replies_to_the_group(client, fake_line):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    await attach_flow(client, tenant, account["id"], "hello group")
    fake_line.groups["Cbookclub01"] = "Book club"
    events = [
        group_event("join", "Cbookclub01"),
        group_event("message", "Cbookclub01", "Umember01", "first"),
        group_event("message", "Cbookclub01", "Umember02", "second"),
    ]
    assert (await post_line(client, account, secret, events)).status_code == 200
    [room] = await Conversation.select().where(Conversation.account_id == account["id"])
    assert room["peer_target"] == "Cbookclub01" and room["name"] == "LINE \u00b7 Book club"
    incoming = (
        await Message.select()
        .where(Message.conversation_id == room["id"], Message.direction == "incoming")
        .order_by(Message.tm_create)
    )
    assert [json.loads(m["source"])["target"] for m in incoming] == ["Umember01", "Umember02"]
    assert [m["text"] for m in incoming] == ["first", "second"]

    async def replies():
        pushed = [r for r in fake_line.received if r["messages"] == [{"type": "text", "text": "hello group"}]]
        return pushed if len(pushed) == 2 else None

    assert {r["to"] for r in await wait_for(replies)} == {"Cbookclub01"}

    # Leaving keeps the conversation; a room (no summary endpoint) is named "Group".
    room_events = [group_event("leave", "Cbookclub01"), group_event("join", "Rroom0001", source_type="room")]
    assert (await post_line(client, account, secret, room_events)).status_code == 200
    rows = await Conversation.select().where(
        Conversation.account_id == account["id"], Conversation.tm_delete.is_null()
    )
    assert {r["peer_target"]: r["name"] for r in rows} == {
        "Cbookclub01": "LINE \u00b7 Book club",
        "Rroom0001": "LINE \u00b7 Group",
    }


# --- 3./4./5. LINE pushes ----------------------------------------------------------------------


async def test_line_text_and_five_images_go_out_in_two_pushes(client, fake_line):
    tenant = await make_tenant()
    _, conversation_id = await line_conversation(client, tenant)
    medias = [{"type": "image", "url": IMAGE.format(i)} for i in range(5)]
    response = await send(client, tenant, conversation_id, {"text": "album", "medias": medias})
    assert response.status_code == 200, response.text
    final = await wait_for(lambda: settled(client, tenant, response.json()["id"]))
    assert final["status"] == "done"
    assert [len(r["messages"]) for r in fake_line.received] == [5, 1]
    keys = [r["retry_key"] for r in fake_line.received]
    assert keys[0] == response.json()["id"] and len(set(keys)) == 2
    objects = [m for r in fake_line.received for m in r["messages"]]
    assert objects[0] == {"type": "text", "text": "album"}
    assert [m["originalContentUrl"] for m in objects[1:]] == [IMAGE.format(i) for i in range(5)]
    sent_ids = [s["id"] for r in fake_line.received for s in r["sent"]]
    assert final["provider_message_ids"] == sent_ids and final["provider_message_id"] == sent_ids[0]
    assert final["delivery_status"] == "sent"


async def test_line_refuses_video_audio_and_http_media_at_the_api(client, fake_line):
    tenant = await make_tenant()
    _, conversation_id = await line_conversation(client, tenant)
    for media in (
        {"type": "video", "url": "https://cdn.example.com/clip.mp4"},
        {"type": "audio/mpeg", "url": "https://cdn.example.com/a.mp3"},
        {"type": "image", "url": "http://cdn.example.com/pic.png"},
    ):
        response = await send(client, tenant, conversation_id, {"text": "x", "medias": [media]})
        assert response.status_code == 400, (media, response.text)
        assert response.json()["error"]["message"]
    assert await Message.count().where(Message.conversation_id == conversation_id) == 1
    assert fake_line.received == []


async def test_fake_line_enforces_the_published_push_limits(settings, fake_line):
    url = f"{settings.resolved_line_api_url}/v2/bot/message/push"
    auth = {"Authorization": "Bearer token"}
    text = {"type": "text", "text": "hi"}
    bad_bodies = [
        {"to": "Ux", "messages": [text] * 6},
        {"to": "Ux", "messages": []},
        {
            "to": "Ux",
            "messages": [
                {
                    "type": "image",
                    "originalContentUrl": "http://x/a.png",
                    "previewImageUrl": "https://x/a.png",
                }
            ],
        },
        {"to": "Ux", "messages": [{"type": "video", "originalContentUrl": "https://x/a.mp4"}]},
        {"to": "Ux", "messages": [{"type": "audio", "originalContentUrl": "https://x/a.m4a"}]},
        {"to": "Ux", "messages": [{"type": "text", "text": "x" * 5001}]},
    ]
    async with httpx.AsyncClient() as http:
        for body in bad_bodies:
            answer = await http.post(url, json=body, headers=auth)
            assert answer.status_code == 400 and answer.json()["details"], body
    assert fake_line.received == []


async def test_line_retry_after_accepted_push_reads_sent_messages_from_the_409(settings, fake_line):
    """An attempt whose pushes LINE accepted, retried (the worker died before recording): every
    push answers 409, and the ids come from the 409 bodies, not the request id header."""
    medias = [{"type": "image", "url": IMAGE.format(i)} for i in range(6)]
    out = Outgoing(message_id=str(uuid.uuid4()), to="Uretry01", sender="", text="hi", medias=medias)
    async with httpx.AsyncClient() as http:
        first = await push_line(http, settings.resolved_line_api_url, "token", out)
        again = await push_line(http, settings.resolved_line_api_url, "token", out)
    assert len(fake_line.received) == 2  # two pushes (7 objects), each delivered once
    assert again.provider_ids == first.provider_ids
    assert first.provider_ids == [s["id"] for r in fake_line.received for s in r["sent"]]
    request_ids = {r["request_id"] for r in fake_line.received}
    assert not request_ids & set(again.provider_ids)


# --- 6. non-text LINE messages -----------------------------------------------------------------


async def test_line_sticker_and_location_are_summarised_with_their_type(client):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    sticker = {
        "id": "501",
        "type": "sticker",
        "packageId": "446",
        "stickerId": "1988",
        "stickerResourceType": "STATIC",
        "quoteToken": "q",
    }
    location = {
        "id": "502",
        "type": "location",
        "title": "Tokyo Tower",
        "address": "4-2-8 Shibakoen",
        "latitude": 35.65,
        "longitude": 139.74,
    }
    events = [line_event("message", "Usticker01", message=m) for m in (sticker, location)]
    assert (await post_line(client, account, secret, events)).status_code == 200
    rows = await Message.select().where(Message.account_id == account["id"]).order_by(Message.tm_create)
    assert [(r["text"], r["content_type"]) for r in rows] == [
        ("[sticker]", "sticker"),
        ("[location: Tokyo Tower, 4-2-8 Shibakoen]", "location"),
    ]
    response = await client.get(f"/v1.0/conversation_messages/{rows[0]['id']}", headers=tenant.admin.headers)
    assert response.json()["content_type"] == "sticker"


# --- 7. text limits per channel ----------------------------------------------------------------


async def test_sms_text_over_1600_characters_is_400(client, fake_sms):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    too_long = await send(client, tenant, conversation_id, {"text": "x" * 1712})
    assert too_long.status_code == 400 and "1,600" in too_long.json()["error"]["message"]
    assert await Message.count().where(Message.conversation_id == conversation_id) == 1
    at_limit = await send(client, tenant, conversation_id, {"text": "y" * 1600})
    assert at_limit.status_code == 200
    assert (await wait_for(lambda: settled(client, tenant, at_limit.json()["id"])))["status"] == "done"
    assert [len(r["body"]) for r in fake_sms.received] == [1600]


async def test_fake_sms_refuses_bodies_over_1600_with_21617(settings):
    url = f"{settings.resolved_sms_api_url}/2010-04-01/Accounts/ACx/Messages.json"
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, data={"To": "+1", "From": "+2", "Body": "x" * 1601}, auth=("ACx", "t"))
    assert answer.status_code == 400 and answer.json()["code"] == 21617


async def test_flow_send_over_the_sms_limit_fails_the_action_with_the_reason(client, fake_sms):
    tenant = await make_tenant()
    await attach_flow(client, tenant, tenant.account["id"], "z" * 1700)
    await open_conversation(client, tenant)

    async def ended():
        row = await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id).first()
        return row if row and row["status"] != "running" else None

    run = await wait_for(ended, within=40)
    assert run["status"] == "failed" and "1,600" in run["reason"]
    assert fake_sms.received == []


# --- 8./9. delivery status and callbacks ---------------------------------------------------------


async def callback(client, tenant, sid: str, status: str, message_id: str | None = None):
    params = {"MessageSid": sid, "AccountSid": "AC" + "0" * 32, "MessageStatus": status}
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    if message_id:
        path = f"{path}?message_id={message_id}"
        headers["X-Twilio-Signature"] = RequestValidator(tenant.auth_token).compute_signature(
            PUBLIC_URL + path, params
        )
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_delivery_status_follows_callbacks_and_emits_updates(client, fake_sms):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    created = await send(client, tenant, conversation_id, {"text": "track me"})
    message_id = created.json()["id"]
    final = await wait_for(lambda: settled(client, tenant, message_id))
    assert (final["status"], final["delivery_status"], final["tm_delivered"]) == ("done", "queued", None)
    sid = final["provider_message_id"]

    async def updates() -> int:
        return await Event.count().where(
            Event.customer_id == tenant.customer_id, Event.type == "conversation_message_updated"
        )

    before = await updates()
    await callback(client, tenant, sid, "sent")
    await callback(client, tenant, sid, "delivered")
    await callback(client, tenant, sid, "sent")  # out of order: changes nothing
    message = (
        await client.get(f"/v1.0/conversation_messages/{message_id}", headers=tenant.admin.headers)
    ).json()
    assert (message["status"], message["delivery_status"]) == ("done", "delivered")
    assert message["tm_delivered"] is not None
    assert await updates() == before + 2
    updated = (
        await Event.select(Event.data)
        .where(Event.customer_id == tenant.customer_id, Event.type == "conversation_message_updated")
        .order_by(Event.seq)
    )
    assert [json.loads(e["data"])["delivery_status"] for e in updated][-2:] == ["sent", "delivered"]


@pytest.mark.parametrize(
    ("early", "status", "delivery"), [("failed", "failed", "failed"), ("delivered", "done", "delivered")]
)
async def test_callback_before_the_provider_answers(client, fake_sms, early, status, delivery):
    """The fake fires the status callback (to the hub, by message id) before answering the send;
    the send activity records its outcome after. The early verdict stands, the sid is recorded."""
    fake_sms.control({"callback_before_answer": early, "callback_host": str(client.base_url)})
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    created = await send(client, tenant, conversation_id, {"text": "early bird"})
    message_id = created.json()["id"]
    [answered] = await wait_for(lambda: _callbacks(fake_sms))
    [record] = fake_sms.received
    assert answered == {"sid": record["sid"], "status": early, "status_code": 200}

    async def recorded():
        row = await Message.select().where(Message.id == uuid.UUID(message_id)).first()
        return row if row["provider_message_id"] else None

    row = await wait_for(recorded)
    assert (row["status"], row["delivery_status"], row["provider_message_id"]) == (
        status,
        delivery,
        record["sid"],
    )
    if early == "failed":
        assert "30003" in row["reason"]


async def _callbacks(fake):
    return fake.callbacks or None


# --- 13. LINE batches ----------------------------------------------------------------------------


async def test_line_batch_stores_valid_events_skips_invalid_and_leaves_unstarted_flows(
    client, fake_line, monkeypatch
):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    await attach_flow(client, tenant, account["id"], "later")

    async def temporal_down(*args, **kwargs):
        raise RPCError("injected: Temporal unreachable", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", temporal_down)
    no_ids = line_event("message", "Ubatch02", message={"type": "text", "text": "no ids"})
    no_ids["webhookEventId"] = ""
    events = [
        line_event("message", "Ubatch01", "first"),
        no_ids,
        {"type": 5, "source": "nonsense"},
        line_event("message", "", "no user"),
        line_event("message", "Ubatch03", "last"),
    ]
    response = await post_line(client, account, secret, events)
    assert response.status_code == 200, response.text
    rows = await Message.select().where(Message.account_id == account["id"]).order_by(Message.tm_create)
    assert [r["text"] for r in rows] == ["first", "last"]
    runs = await Activeflow.select().where(Activeflow.account_id == account["id"])
    assert len(runs) == 2 and not any(r["started"] for r in runs)  # left to recovery
