"""Conversation tags (rules, permissions, filter, events) and message deletion (issue 15, items 3 and 7)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from hub import conversations, outbound, tags
from hub.errors import BadRequest
from hub.tables import ConversationTag, Message
from tests.helpers import make_tenant, open_conversation, signed_sms, sms_params
from tests.integration.test_conversation_api import assert_error, events_of, listing, new_conversation, put

# --- tag rules (pure) --------------------------------------------------------------------------


def test_tags_are_lowercased_deduplicated_and_bounded():
    assert tags.normalize_tags(["VIP", "vip", "follow-up", "a_1"]) == ["vip", "follow-up", "a_1"]
    assert tags.normalize_tags([f"t{i}" for i in range(20)] + ["t0"]) == [f"t{i}" for i in range(20)]
    for bad in ["", "a b", "x" * 51, "é", "tag!", "日本"]:
        with pytest.raises(BadRequest, match="not valid"):
            tags.normalize_tags([bad])
    with pytest.raises(BadRequest, match="at most 20 tags"):
        tags.normalize_tags([f"t{i}" for i in range(21)])


# --- PUT (admin/manager), POST/DELETE (owner or admin/manager) ----------------------------------


async def test_put_replaces_tags_and_every_change_is_an_event(client):
    tenant = await make_tenant()
    conv = await new_conversation(client, tenant)
    assert conv["tags"] == []
    cid = conv["id"]

    response = await put(client, tenant.manager, cid, {"tags": ["Billing", "vip", "VIP"]})
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["billing", "vip"]
    got = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert got["tags"] == ["billing", "vip"] and got["name"] == conv["name"]

    response = await client.post(
        f"/v1.0/conversations/{cid}/tags", json={"tags": ["urgent", "vip"]}, headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["billing", "vip", "urgent"]
    response = await client.delete(f"/v1.0/conversations/{cid}/tags/BILLING", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == ["vip", "urgent"]
    # Removing an absent tag or adding a present one changes nothing and emits nothing.
    before = len(await events_of(cid, "conversation_updated"))
    assert (
        await client.delete(f"/v1.0/conversations/{cid}/tags/absent", headers=tenant.admin.headers)
    ).json()["tags"] == ["vip", "urgent"]
    await client.post(f"/v1.0/conversations/{cid}/tags", json={"tags": ["vip"]}, headers=tenant.admin.headers)
    assert len(await events_of(cid, "conversation_updated")) == before

    updates = await events_of(cid, "conversation_updated")
    assert [e["tags"] for e in updates] == [
        ["billing", "vip"],
        ["billing", "vip", "urgent"],
        ["vip", "urgent"],
    ]
    # The filter rows follow the column.
    rows = await ConversationTag.select(ConversationTag.tag).where(
        ConversationTag.conversation_id == uuid.UUID(cid)
    )
    assert sorted(r["tag"] for r in rows) == ["urgent", "vip"]

    response = await put(client, tenant.admin, cid, {"tags": []})
    assert response.json()["tags"] == []
    assert await ConversationTag.count().where(ConversationTag.conversation_id == uuid.UUID(cid)) == 0


async def test_tag_permissions(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    # PUT stays admin/manager only, tags included.
    assert_error(await put(client, tenant.agent, cid, {"tags": ["x"]}), 403, "forbidden")
    # A plain agent may tag only the conversations it owns.
    add = {"tags": ["mine"]}
    assert_error(
        await client.post(f"/v1.0/conversations/{cid}/tags", json=add, headers=tenant.agent.headers),
        403,
        "forbidden",
    )
    await put(client, tenant.admin, cid, {"owner_id": str(tenant.agent.id)})
    response = await client.post(f"/v1.0/conversations/{cid}/tags", json=add, headers=tenant.agent.headers)
    assert response.status_code == 200 and response.json()["tags"] == ["mine"]
    assert_error(
        await client.delete(f"/v1.0/conversations/{cid}/tags/mine", headers=tenant.other_agent.headers),
        403,
        "forbidden",
    )
    response = await client.delete(f"/v1.0/conversations/{cid}/tags/mine", headers=tenant.agent.headers)
    assert response.status_code == 200 and response.json()["tags"] == []
    # Another tenant sees nothing.
    other = await make_tenant()
    assert_error(
        await client.post(f"/v1.0/conversations/{cid}/tags", json=add, headers=other.admin.headers),
        404,
        "not_found",
    )
    assert_error(
        await client.delete(f"/v1.0/conversations/{cid}/tags/mine", headers=other.admin.headers),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    "body",
    [
        {"tags": ["has space"]},
        {"tags": [""]},
        {"tags": ["x" * 51]},
        {"tags": [f"t{i}" for i in range(21)]},
        {"tags": "vip"},
        {"tags": [7]},
        {},
    ],
)
async def test_bad_tags_are_400_and_change_nothing(client, body):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    await put(client, tenant.admin, cid, {"tags": ["keep"]})
    response = await client.post(f"/v1.0/conversations/{cid}/tags", json=body, headers=tenant.admin.headers)
    assert_error(response, 400, "bad_request")
    if body:
        assert_error(await put(client, tenant.admin, cid, body), 400, "bad_request")
    got = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert got["tags"] == ["keep"]


async def test_adding_past_twenty_tags_is_400(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    await put(client, tenant.admin, cid, {"tags": [f"t{i}" for i in range(20)]})
    response = await client.post(
        f"/v1.0/conversations/{cid}/tags", json={"tags": ["one-more"]}, headers=tenant.admin.headers
    )
    assert "at most 20" in assert_error(response, 400, "bad_request")["message"]
    bad_path = await client.delete(
        f"/v1.0/conversations/{cid}/tags/not%20a%20tag", headers=tenant.admin.headers
    )
    assert bad_path.status_code == 400, bad_path.text


async def test_concurrent_tag_additions_lose_none(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    results = await asyncio.gather(
        *[
            client.post(
                f"/v1.0/conversations/{cid}/tags", json={"tags": [f"c{i}"]}, headers=tenant.admin.headers
            )
            for i in range(12)
        ]
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    got = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert sorted(got["tags"]) == sorted(f"c{i}" for i in range(12))
    assert await ConversationTag.count().where(ConversationTag.conversation_id == uuid.UUID(cid)) == 12


async def test_tag_filter_with_owner_rule_and_isolation(client):
    tenant = await make_tenant()
    a, b, c = [(await new_conversation(client, tenant))["id"] for _ in range(3)]
    await put(client, tenant.admin, a, {"tags": ["vip"]})
    await put(client, tenant.admin, b, {"tags": ["vip", "billing"], "owner_id": str(tenant.agent.id)})
    await put(client, tenant.admin, c, {"tags": ["billing"]})
    assert await listing(client, tenant.admin, tag="vip") == [b, a]
    assert await listing(client, tenant.admin, tag="VIP") == [b, a]
    assert await listing(client, tenant.admin, tag="billing") == [c, b]
    assert await listing(client, tenant.admin, tag="none") == []
    # Combined with the owner filter (a plain agent must pass its own id).
    assert await listing(client, tenant.agent, tag="vip", owner_id=str(tenant.agent.id)) == [b]
    response = await client.get("/v1.0/conversations", params={"tag": "vip"}, headers=tenant.agent.headers)
    assert_error(response, 403, "forbidden")
    # Another tenant's tags never match.
    other = await make_tenant()
    oc = (await new_conversation(client, other))["id"]
    await put(client, other.admin, oc, {"tags": ["vip"]})
    assert await listing(client, tenant.admin, tag="vip") == [b, a]
    assert await listing(client, other.admin, tag="vip") == [oc]
    assert_error(
        await client.get("/v1.0/conversations", params={"tag": "not valid!"}, headers=tenant.admin.headers),
        400,
        "bad_request",
    )
    # Paging through a filtered list.
    response = await client.get(
        "/v1.0/conversations", params={"tag": "vip", "page_size": 1}, headers=tenant.admin.headers
    )
    first = response.json()
    assert [x["id"] for x in first["result"]] == [b] and first["next_page_token"]
    response = await client.get(
        "/v1.0/conversations",
        params={"tag": "vip", "page_size": 1, "page_token": first["next_page_token"]},
        headers=tenant.admin.headers,
    )
    assert [x["id"] for x in response.json()["result"]] == [a]


# --- message deletion -----------------------------------------------------------------------------


async def _inbound_message(client, tenant, sender: str, text: str, sid: str) -> dict:
    params = sms_params(sender=sender, to=tenant.account["number"], body=text, sid=sid)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    row = await Message.select().where(Message.provider_message_id == sid).first()
    return row


async def test_delete_message_blanks_it_keeps_the_row_and_emits_the_event(client):
    tenant = await make_tenant()
    sender = f"+1628{uuid.uuid4().int % 10**7:07d}"
    sid = "SM" + uuid.uuid4().hex
    first = await _inbound_message(client, tenant, sender, "my card is 4111 1111", sid)
    second = await _inbound_message(client, tenant, sender, "thanks", "SM" + uuid.uuid4().hex)
    cid, mid = first["conversation_id"], first["id"]

    for member in (tenant.agent, tenant.other_agent):
        assert_error(
            await client.delete(f"/v1.0/conversation_messages/{mid}", headers=member.headers),
            403,
            "forbidden",
        )
    other = await make_tenant()
    assert_error(
        await client.delete(f"/v1.0/conversation_messages/{mid}", headers=other.admin.headers),
        404,
        "not_found",
    )

    response = await client.delete(f"/v1.0/conversation_messages/{mid}", headers=tenant.manager.headers)
    assert response.status_code == 200, response.text
    deleted = response.json()
    assert deleted["text"] == "" and deleted["medias"] == [] and deleted["tm_delete"]

    row = await Message.select().where(Message.id == mid).first()
    assert row is not None and row["text"] == "" and row["tm_delete"] is not None
    # It leaves reads and lists.
    assert_error(
        await client.get(f"/v1.0/conversation_messages/{mid}", headers=tenant.admin.headers), 404, "not_found"
    )
    listed = (await client.get(f"/v1.0/conversations/{cid}/messages", headers=tenant.admin.headers)).json()
    assert [m["id"] for m in listed["result"]] == [str(second["id"])]
    # The documented event, without the text.
    events = await events_of(cid, "conversation_message_deleted")
    assert [e["id"] for e in events] == [str(mid)] and events[0]["text"] == ""
    # A second delete is 404; the provider's retry of the deleted message stores nothing new.
    assert_error(
        await client.delete(f"/v1.0/conversation_messages/{mid}", headers=tenant.admin.headers),
        404,
        "not_found",
    )
    params = sms_params(sender=sender, to=tenant.account["number"], body="my card is 4111 1111", sid=sid)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    assert await Message.count().where(Message.provider_message_id == sid) == 1
    assert (await Message.select().where(Message.id == mid).first())["text"] == ""


async def test_a_message_still_being_sent_cannot_be_deleted(client):
    tenant = await make_tenant()
    cid = await open_conversation(client, tenant)
    message, created = await outbound.create_outgoing(tenant.customer_id, cid, "on its way", [])
    assert created and message["status"] == "progressing"
    response = await client.delete(
        f"/v1.0/conversation_messages/{message['id']}", headers=tenant.admin.headers
    )
    assert "being sent" in assert_error(response, 409, "conflict")["message"]
    assert (await Message.select().where(Message.id == message["id"]).first())["text"] == "on its way"


async def test_tags_survive_an_assignment_change(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    await put(client, tenant.admin, cid, {"tags": ["vip"]})
    got = (await put(client, tenant.admin, cid, {"owner_id": str(tenant.agent.id)})).json()
    assert got["tags"] == ["vip"]
    stored = await conversations.get_conversation(tenant.customer_id, uuid.UUID(cid))
    assert tags.tags_of(stored) == ["vip"] and stored["owner_id"] == tenant.agent.id


# --- inbox fields ---------------------------------------------------------------------------------


async def test_last_message_follows_inbound_outbound_and_deletion(client):
    tenant = await make_tenant()
    sender = f"+1628{uuid.uuid4().int % 10**7:07d}"
    first = await _inbound_message(client, tenant, sender, "x" * 300, "SM" + uuid.uuid4().hex)
    cid = first["conversation_id"]

    async def shown() -> dict:
        response = await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)
        return response.json()

    conv = await shown()
    assert conv["last_message"]["id"] == str(first["id"])
    assert conv["last_message"]["direction"] == "incoming" and conv["last_message"]["text"] == "x" * 200
    assert conv["tm_last_message"] and conv["status"] == "open"
    created = await events_of(cid, "conversation_created")
    assert created[0]["last_message"]["id"] == str(first["id"])

    response = await client.post(
        f"/v1.0/conversations/{cid}/messages", json={"text": "our answer"}, headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text
    reply = response.json()
    conv = await shown()
    assert conv["last_message"]["id"] == reply["id"] and conv["last_message"]["direction"] == "outgoing"
    listed = await client.get("/v1.0/conversations", headers=tenant.admin.headers)
    [row] = [c for c in listed.json()["result"] if c["id"] == str(cid)]
    assert row["last_message"]["text"] == "our answer"

    second = await _inbound_message(client, tenant, sender, "and one more", "SM" + uuid.uuid4().hex)
    assert (await shown())["last_message"]["id"] == str(second["id"])
    # Deleting the last message puts the one before in its place; deleting an older one changes nothing.
    await client.delete(f"/v1.0/conversation_messages/{second['id']}", headers=tenant.admin.headers)
    conv = await shown()
    assert conv["last_message"]["id"] == reply["id"]
    await client.delete(f"/v1.0/conversation_messages/{first['id']}", headers=tenant.admin.headers)
    assert (await shown())["last_message"]["id"] == reply["id"]
