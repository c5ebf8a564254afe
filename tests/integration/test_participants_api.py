"""Participants through the HTTP API and the real send path: cross-channel conversations made by
signed provider webhooks (SMS + LINE), the participants endpoints, outbound channel selection
through Temporal to the fake providers, the routing setting, flows, and the channel carried by
webhook and live-stream payloads. Per-caller permissions: test_conversation_permissions.py."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import msgspec
import pytest

from hub.tables import Conversation, Event
from tests.helpers import (
    Tenant,
    line_event,
    make_line_account,
    make_tenant,
    open_conversation,
    signed_line,
    signed_sms,
    sms_params,
    wait_for,
)
from tests.integration.test_events import Stream
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("worker")


@dataclass
class World:
    tenant: Tenant
    line: dict
    line_secret: str
    number: str
    line_user: str


async def world(client, routing: str = "contact", contact: bool = True) -> World:
    tenant = await make_tenant()
    line, line_secret = await make_line_account(tenant.customer_id)
    number, line_user = "+1415" + f"{secrets.randbelow(10**7):07d}", "U" + secrets.token_hex(16)
    if contact:
        response = await client.post(
            "/v1.0/contacts",
            json={
                "name": "Alice",
                "addresses": [{"type": "tel", "target": number}, {"type": "line", "target": line_user}],
            },
            headers=tenant.admin.headers,
        )
        assert response.status_code == 200, response.text
    if routing != "contact":
        response = await client.put(
            "/v1.0/customer", json={"conversation_routing": routing}, headers=tenant.admin.headers
        )
        assert response.status_code == 200, response.text
    return World(tenant, line, line_secret, number, line_user)


async def sms_in(client, w: World, text: str = "by sms", number: str | None = None) -> None:
    params = sms_params(sender=number or w.number, to=w.tenant.account["number"], body=text)
    path, body, headers = signed_sms(w.tenant.account["id"], w.tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def line_in(client, w: World, text: str = "by line", user: str | None = None) -> None:
    path, body, headers = signed_line(
        w.line["id"], w.line_secret, [line_event("message", user or w.line_user, text)]
    )
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def live_conversations(tenant) -> list[dict]:
    return (
        await Conversation.select()
        .where(Conversation.customer_id == tenant.customer_id, Conversation.tm_delete.is_null())
        .order_by(Conversation.tm_create)
    )


async def get(client, tenant, path: str) -> dict:
    response = await client.get(path, headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def settled(client, tenant, message_id) -> dict | None:
    message = await get(client, tenant, f"/v1.0/conversation_messages/{message_id}")
    return message if message["status"] != "progressing" else None


async def send(client, tenant, conversation_id, body: dict, status: int = 200) -> dict:
    response = await client.post(
        f"/v1.0/conversations/{conversation_id}/messages", json=body, headers=tenant.admin.headers
    )
    assert response.status_code == status, response.text
    return response.json()


async def cross_channel(client, w: World) -> tuple[str, dict]:
    """SMS in, then LINE in from the same contact: the conversation and its participants by channel."""
    await sms_in(client, w)
    await line_in(client, w)
    [conversation] = await live_conversations(w.tenant)
    got = await get(client, w.tenant, f"/v1.0/conversations/{conversation['id']}")
    return str(conversation["id"]), {p["channel"]: p for p in got["participants"]}


async def test_a_contact_continues_on_line_and_replies_follow_the_last_active_channel(
    client, fake_sms, fake_line
):
    w = await world(client)
    conversation_id, by_channel = await cross_channel(client, w)
    got = await get(client, w.tenant, f"/v1.0/conversations/{conversation_id}")
    assert [p["channel"] for p in got["participants"]] == ["sms", "line"]
    assert (got["type"], got["peer"]["target"], got["account_id"]) == (
        "message",
        w.number,
        str(w.tenant.account["id"]),
    )
    line_participant = by_channel["line"]
    assert line_participant["address"] == {
        "type": "line",
        "target": w.line_user,
        "target_name": "Alice",
        "name": "",
        "detail": "",
    }
    assert line_participant["account_id"] == str(w.line["id"]) and line_participant["contact_id"]
    assert line_participant["tm_last_active"] is not None
    # The list endpoint pages the same participants; the conversation list does not carry them.
    page = await get(client, w.tenant, f"/v1.0/conversations/{conversation_id}/participants")
    assert {p["id"] for p in page["result"]} == {p["id"] for p in got["participants"]}
    listing = await get(client, w.tenant, "/v1.0/conversations")
    assert "participants" not in listing["result"][0]
    messages = (await get(client, w.tenant, f"/v1.0/conversations/{conversation_id}/messages"))["result"]
    assert sorted(m["channel"] for m in messages) == ["line", "sms"]

    # No participant_id: the last active channel, LINE.
    reply = await send(client, w.tenant, conversation_id, {"text": "on LINE"})
    assert (reply["channel"], reply["participant_id"], reply["account_id"]) == (
        "line",
        line_participant["id"],
        str(w.line["id"]),
    )
    assert (await wait_for(lambda: settled(client, w.tenant, reply["id"])))["status"] == "done"
    [push] = fake_line.received
    assert push["to"] == w.line_user and push["messages"] == [{"type": "text", "text": "on LINE"}]
    assert fake_sms.received == []

    # Named: the SMS participant, to the number from the account's number.
    named = await send(
        client, w.tenant, conversation_id, {"text": "by SMS", "participant_id": by_channel["sms"]["id"]}
    )
    assert named["channel"] == "sms"
    assert (await wait_for(lambda: settled(client, w.tenant, named["id"])))["status"] == "done"
    [sms] = fake_sms.received
    assert (sms["to"], sms["from"], sms["body"]) == (w.number, w.tenant.account["number"], "by SMS")

    # A video cannot go by LINE: it goes by MMS although LINE is the latest.
    video = await send(
        client,
        w.tenant,
        conversation_id,
        {"text": "clip", "medias": [{"type": "video/mp4", "url": "https://example.com/clip.mp4"}]},
    )
    assert video["channel"] == "sms"
    assert (await wait_for(lambda: settled(client, w.tenant, video["id"])))["status"] == "done"
    assert fake_sms.received[-1]["media_url"] == ["https://example.com/clip.mp4"]


async def test_no_participant_able_to_carry_the_message_is_a_400_saying_why(client, fake_line):
    w = await world(client, contact=False)
    await line_in(client, w)
    [conversation] = await live_conversations(w.tenant)
    error = await send(
        client,
        w.tenant,
        conversation["id"],
        {"text": "clip", "medias": [{"type": "video/mp4", "url": "https://example.com/clip.mp4"}]},
        status=400,
    )
    assert "no participant can carry this message" in error["error"]["message"]
    assert "LINE cannot send video" in error["error"]["message"]
    foreign = await send(
        client, w.tenant, conversation["id"], {"text": "x", "participant_id": str(uuid.uuid4())}, 400
    )
    assert "not a live participant" in foreign["error"]["message"]
    bad = await send(client, w.tenant, conversation["id"], {"text": "x", "participant_id": "nope"}, 400)
    assert bad["error"]["status"] == 400
    messages = (await get(client, w.tenant, f"/v1.0/conversations/{conversation['id']}/messages"))["result"]
    assert [m["direction"] for m in messages] == ["incoming"]
    assert fake_line.received == []


async def test_routing_by_address_keeps_each_channel_in_its_own_conversation(client):
    w = await world(client, routing="address")
    customer = await get(client, w.tenant, "/v1.0/customer")
    assert customer["conversation_routing"] == "address"
    await sms_in(client, w)
    await line_in(client, w)
    rows = await live_conversations(w.tenant)
    assert [r["type"] for r in rows] == ["message", "line"]
    for row in rows:
        assert len((await get(client, w.tenant, f"/v1.0/conversations/{row['id']}"))["participants"]) == 1


async def test_the_routing_setting_is_validated_and_admin_or_manager_only(client):
    tenant = await make_tenant()
    assert (await get(client, tenant, "/v1.0/customer"))["conversation_routing"] == "contact"
    bogus = await client.put(
        "/v1.0/customer", json={"conversation_routing": "bogus"}, headers=tenant.admin.headers
    )
    assert bogus.status_code == 400
    plain = await client.put(
        "/v1.0/customer", json={"conversation_routing": "address"}, headers=tenant.agent.headers
    )
    assert plain.status_code == 403
    assert (await get(client, tenant, "/v1.0/customer"))["conversation_routing"] == "contact"
    done = await client.put(
        "/v1.0/customer", json={"conversation_routing": "address"}, headers=tenant.manager.headers
    )
    assert done.status_code == 200 and done.json()["conversation_routing"] == "address"


async def updated_participants(conversation_id) -> list[list[str]]:
    rows = (
        await Event.select(Event.data)
        .where(Event.conversation_id == uuid.UUID(conversation_id), Event.type == "conversation_updated")
        .order_by(Event.seq)
    )
    return [[p["address"]["target"] for p in msgspec.json.decode(r["data"])["participants"]] for r in rows]


async def test_participants_are_added_and_removed_with_their_rules(client):
    w = await world(client, contact=False)
    tenant = w.tenant
    conversation_id = str(await open_conversation(client, tenant, w.number))
    other_id = str(await open_conversation(client, tenant))
    base = f"/v1.0/conversations/{conversation_id}/participants"

    async def add(account_id, address: dict, status: int) -> dict:
        response = await client.post(
            base, json={"account_id": str(account_id), "address": address}, headers=tenant.admin.headers
        )
        assert response.status_code == status, response.text
        return response.json()

    added = await add(w.line["id"], {"type": "line", "target": w.line_user, "target_name": "Al"}, 200)
    assert (added["channel"], added["address"]["target"], added["address"]["target_name"]) == (
        "line",
        w.line_user,
        "Al",
    )
    assert added["conversation_id"] == conversation_id and added["tm_last_active"] is None
    assert await updated_participants(conversation_id) == [[w.number, w.line_user]]

    # Bad addresses, accounts of another type or customer, unknown fields: 400, nothing written.
    stranger = await make_tenant()
    for account_id, address in (
        (tenant.account["id"], {"type": "tel", "target": "not a number"}),
        (tenant.account["id"], {"type": "line", "target": w.line_user}),
        (w.line["id"], {"type": "tel", "target": "+14155550000"}),
        (stranger.account["id"], {"type": "tel", "target": "+14155550000"}),
        (uuid.uuid4(), {"type": "tel", "target": "+14155550000"}),
        (tenant.account["id"], {"type": "fax", "target": "+14155550000"}),
        (tenant.account["id"], {"type": "tel"}),
    ):
        error = await add(account_id, address, 400)
        assert error["error"]["reason"] == "bad_request", (account_id, address)
    # Live elsewhere (the other conversation's number) or here already: 409.
    [other_participant] = (await get(client, tenant, f"/v1.0/conversations/{other_id}"))["participants"]
    taken = await add(
        tenant.account["id"], {"type": "tel", "target": other_participant["address"]["target"]}, 409
    )
    assert "another open conversation" in taken["error"]["message"]
    # A number written another way is the same address.
    here = await add(tenant.account["id"], {"type": "tel", "target": w.number[:2] + " " + w.number[2:]}, 409)
    assert "of this conversation already" in here["error"]["message"]
    assert await updated_participants(conversation_id) == [[w.number, w.line_user]]

    # The LINE user now writes into this conversation.
    await line_in(client, w, "joined by hand")
    assert len(await live_conversations(tenant)) == 2

    # Remove: unknown or another conversation's participant 404; the last one 409.
    gone = await client.delete(f"{base}/{other_participant['id']}", headers=tenant.admin.headers)
    assert gone.status_code == 404
    removed = await client.delete(f"{base}/{added['id']}", headers=tenant.admin.headers)
    assert removed.status_code == 200 and removed.json()["tm_delete"] is not None
    [last] = (await get(client, tenant, f"/v1.0/conversations/{conversation_id}"))["participants"]
    refused = await client.delete(f"{base}/{last['id']}", headers=tenant.admin.headers)
    assert refused.status_code == 409 and "last participant" in refused.json()["error"]["message"]
    assert await updated_participants(conversation_id) == [[w.number, w.line_user], [w.number]]

    # The removed LINE user's next message opens a new conversation.
    await line_in(client, w, "after removal")
    rows = await live_conversations(tenant)
    assert len(rows) == 3 and rows[-1]["type"] == "line" and rows[-1]["peer_target"] == w.line_user


async def test_message_payloads_carry_the_channel_on_webhooks_and_the_live_stream(
    client, dispatchers, fake_line
):
    w = await world(client)
    receiver = await Receiver().start()
    try:
        response = await client.put(
            "/v1.0/customer", json={"webhook_uri": receiver.url}, headers=w.tenant.admin.headers
        )
        assert response.status_code == 200, response.text
        receiver.secrets.append(response.json()["webhook_secret"])
        async with Stream(str(client.base_url), w.tenant.admin.token) as stream:
            conversation_id, by_channel = await cross_channel(client, w)
            reply = await send(client, w.tenant, conversation_id, {"text": "reply"})

            def created(events) -> list[dict]:
                return [e for e in events if e["type"] == "conversation_message_created"]

            async def all_three():
                hooks = created([r.body for r in receiver.received])
                live = created(stream.events)
                return (hooks, live) if len(hooks) >= 3 and len(live) >= 3 else None

            hooks, live = await wait_for(all_three, within=30)
        for payloads in (hooks, live):
            assert [(e["data"]["channel"], e["data"]["participant_id"]) for e in payloads[:3]] == [
                ("sms", by_channel["sms"]["id"]),
                ("line", by_channel["line"]["id"]),
                ("line", reply["participant_id"]),
            ]
        joined = [r.body for r in receiver.received if r.body["type"] == "conversation_updated"]
        assert [p["channel"] for p in joined[0]["data"]["participants"]] == ["sms", "line"]
    finally:
        await receiver.stop()


async def test_a_flow_replies_on_the_channel_it_was_started_from(client, fake_sms, fake_line):
    w = await world(client)
    flow = await client.post(
        "/v1.0/flows",
        json={
            "name": "echo",
            "actions": [
                {
                    "id": "reply",
                    "type": "conversation_send",
                    "option": {
                        "text": "via ${message.channel}, ${conversation.participants.count} ways: "
                        "${conversation.participants.0.channel} ${conversation.participants.1.address.target}"
                    },
                }
            ],
        },
        headers=w.tenant.admin.headers,
    )
    assert flow.status_code == 200, flow.text
    attach = await client.put(
        f"/v1.0/accounts/{w.line['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=w.tenant.admin.headers,
    )
    assert attach.status_code == 200, attach.text
    await sms_in(client, w)  # the SMS account has no flow
    await line_in(client, w)

    async def pushed():
        return fake_line.received or None

    [push] = await wait_for(pushed, within=30)
    assert push["to"] == w.line_user
    assert push["messages"] == [{"type": "text", "text": f"via line, 2 ways: sms {w.line_user}"}]
    assert fake_sms.received == []
