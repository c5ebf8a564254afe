"""Conversation close and reopen (issue 15, item 1): permissions, idempotence, events, sends into
a closed conversation (409), and closing stopping the conversation's running activeflows."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from hub.tables import Conversation, Message
from tests.helpers import make_tenant, open_conversation, signed_sms, sms_params, wait_for
from tests.integration.test_conversation_api import assert_error, events_of, new_conversation, put
from tests.integration.test_flows import finished_run, inbound, outgoing_texts, reply, runs_of, setup_flow


async def close(client, member, cid):
    return await client.post(f"/v1.0/conversations/{cid}/close", headers=member.headers)


async def reopen(client, member, cid):
    return await client.post(f"/v1.0/conversations/{cid}/reopen", headers=member.headers)


async def test_close_and_reopen_permissions_and_events(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    # A plain agent that does not own it may do neither; another tenant sees nothing.
    assert_error(await close(client, tenant.agent, cid), 403, "forbidden")
    other = await make_tenant()
    assert_error(await close(client, other.admin, cid), 404, "not_found")
    assert_error(await reopen(client, other.admin, cid), 404, "not_found")

    response = await close(client, tenant.manager, cid)
    assert response.status_code == 200, response.text
    closed = response.json()
    assert closed["status"] == "closed" and closed["closed_reason"] == "api" and closed["tm_closed"]
    # Closing again changes nothing and emits nothing.
    assert (await close(client, tenant.admin, cid)).json()["tm_closed"] == closed["tm_closed"]
    assert_error(await reopen(client, tenant.agent, cid), 403, "forbidden")
    opened = (await reopen(client, tenant.admin, cid)).json()
    assert opened["status"] == "open" and opened["tm_closed"] is None and opened["closed_reason"] == ""
    assert (await reopen(client, tenant.admin, cid)).json()["status"] == "open"

    # The owning agent may close and reopen its own conversation.
    await put(client, tenant.admin, cid, {"owner_id": str(tenant.agent.id)})
    assert (await close(client, tenant.agent, cid)).json()["status"] == "closed"
    assert_error(await close(client, tenant.other_agent, cid), 403, "forbidden")
    assert (await reopen(client, tenant.agent, cid)).json()["status"] == "open"

    updates = await events_of(cid, "conversation_updated")
    assert [(e["status"], e["closed_reason"], e["owner_id"] == str(tenant.agent.id)) for e in updates] == [
        ("closed", "api", False),
        ("open", "", False),
        ("open", "", True),
        ("closed", "api", True),
        ("open", "", True),
    ]
    # The status filter follows.
    await close(client, tenant.admin, cid)
    params = {"status": "closed"}
    listed = await client.get("/v1.0/conversations", params=params, headers=tenant.admin.headers)
    assert [c["id"] for c in listed.json()["result"]] == [cid]


async def test_sending_into_a_closed_conversation_is_409(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    await close(client, tenant.admin, cid)
    response = await client.post(
        f"/v1.0/conversations/{cid}/messages", json={"text": "hello?"}, headers=tenant.admin.headers
    )
    assert "closed" in assert_error(response, 409, "conflict")["message"]
    listed = await client.get(f"/v1.0/conversations/{cid}/messages", headers=tenant.admin.headers)
    assert [m["direction"] for m in listed.json()["result"]] == ["incoming"]
    await reopen(client, tenant.admin, cid)
    response = await client.post(
        f"/v1.0/conversations/{cid}/messages", json={"text": "hello again"}, headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("worker")
async def test_closing_stops_the_running_activeflows(client, temporal_env):
    actions = [{"id": "wait", "type": "sleep", "option": {"duration_ms": 60_000}}, reply("too late")]
    tenant, _ = await setup_flow(client, actions)
    await inbound(client, tenant)
    [run] = await wait_for(lambda: runs_of(tenant))
    handle = temporal_env.client.get_workflow_handle(run["workflow_id"])
    # Asleep in its first action: the stop must wake it.
    await wait_for(lambda: _in_action(client, tenant, run["id"], "wait"))
    response = await close(client, tenant.admin, run["conversation_id"])
    assert response.status_code == 200, response.text
    assert await asyncio.wait_for(handle.result(), 20) == "stopped"
    [final] = await runs_of(tenant)
    assert (final["status"], final["reason"]) == ("stopped", "conversation closed")
    assert await outgoing_texts(tenant) == []


async def _in_action(client, tenant, activeflow_id, action_id) -> bool:
    response = await client.get(f"/v1.0/activeflows/{activeflow_id}", headers=tenant.admin.headers)
    return response.json().get("current_action_id") == action_id


# --- closed conversations and room matching (participants carry the status) -------------------


async def _sms(client, tenant, sender: str, text: str = "hi"):
    params = sms_params(sender=sender, to=tenant.account["number"], body=text)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    return await client.post(path, content=body, headers=headers)


async def _open_of(tenant, sender: str) -> list[dict]:
    return (
        await Conversation.select()
        .where(
            Conversation.customer_id == tenant.customer_id,
            Conversation.peer_target == sender,
            Conversation.tm_delete.is_null(),
        )
        .order_by(Conversation.tm_create)
    )


async def test_a_message_to_a_closed_conversation_opens_a_linked_one_once(client):
    tenant = await make_tenant()
    sender = f"+1629{uuid.uuid4().int % 10**7:07d}"
    first = await open_conversation(client, tenant, sender=sender)
    await close(client, tenant.admin, first)
    results = await asyncio.gather(*[_sms(client, tenant, sender, f"again {i}") for i in range(20)])
    assert all(r.status_code == 200 for r in results), [r.text for r in results if r.status_code != 200]
    rows = await _open_of(tenant, sender)
    assert [r["id"] for r in rows][0] == first and len(rows) == 2
    second = rows[1]
    assert second["status"] == "open" and second["previous_conversation_id"] == first
    assert await Message.count().where(Message.conversation_id == second["id"]) == 20
    assert await Message.count().where(Message.conversation_id == first) == 1
    shown = (await client.get(f"/v1.0/conversations/{second['id']}", headers=tenant.admin.headers)).json()
    assert shown["previous_conversation_id"] == str(first)
    # The closed one can be found by its peer too.
    params = {"peer": sender}
    listed = await client.get("/v1.0/conversations", params=params, headers=tenant.admin.headers)
    assert [c["id"] for c in listed.json()["result"]] == [str(second["id"]), str(first)]
    params = {"peer": sender, "status": "closed"}
    listed = await client.get("/v1.0/conversations", params=params, headers=tenant.admin.headers)
    assert [c["id"] for c in listed.json()["result"]] == [str(first)]


async def test_reopen_is_409_while_a_participant_is_held_elsewhere(client):
    tenant = await make_tenant()
    sender = f"+1629{uuid.uuid4().int % 10**7:07d}"
    first = await open_conversation(client, tenant, sender=sender)
    await close(client, tenant.admin, first)
    assert (await _sms(client, tenant, sender)).status_code == 200
    second = (await _open_of(tenant, sender))[1]["id"]
    response = await reopen(client, tenant.admin, first)
    assert str(second) in assert_error(response, 409, "conflict")["message"]
    row = await Conversation.select(Conversation.status).where(Conversation.id == first).first()
    assert row["status"] == "closed"
    # Once the newer one is closed, the older one reopens and takes the address back.
    await close(client, tenant.admin, second)
    assert (await reopen(client, tenant.admin, first)).json()["status"] == "open"
    assert (await _sms(client, tenant, sender, "back")).status_code == 200
    latest = (
        await Message.select()
        .where(Message.text == "back", Message.customer_id == tenant.customer_id)
        .first()
    )
    assert latest["conversation_id"] == first


# --- the conversation_close flow action ----------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_a_flow_closes_its_conversation_and_goes_on(client, temporal_env, fake_sms):
    actions = [
        {
            "id": "before",
            "type": "variable_set",
            "option": {"name": "seen", "value": "${conversation.status}"},
        },
        {"id": "bye", "type": "conversation_send", "option": {"text": "bye (${seen})"}},
        {"id": "close", "type": "conversation_close", "option": {"reason": "resolved by ${flow.id}"}},
        {"id": "after", "type": "variable_set", "option": {"name": "now", "value": "${conversation.status}"}},
        {"id": "late", "type": "conversation_send", "option": {"text": "too late"}},
    ]
    tenant, flow = await setup_flow(client, actions)
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    run = {
        **run,
        "executed_actions": json.loads(run["executed_actions"]),
        "variables": json.loads(run["variables"]),
    }
    # The closing run itself is not stopped: it goes on, and its send into the closed
    # conversation fails that action (409) and so the run.
    assert run["status"] == "failed" and "late" in run["reason"] and "closed" in run["reason"], run
    assert run["executed_actions"] == ["before", "bye", "close", "after", "late"]
    assert run["variables"]["seen"] == "open" and run["variables"]["now"] == "closed"
    assert await outgoing_texts(tenant) == ["bye (open)"]
    shown = (
        await client.get(f"/v1.0/conversations/{run['conversation_id']}", headers=tenant.admin.headers)
    ).json()
    assert (shown["status"], shown["closed_reason"]) == ("closed", "flow")
    assert shown["closed_note"] == f"resolved by {flow['id']}"


async def test_conversation_close_option_is_validated(client):
    tenant = await make_tenant()
    for option in ({"reason": "x" * 201}, {"unknown": 1}, {"reason": 5}):
        body = {"name": "bad", "actions": [{"id": "c", "type": "conversation_close", "option": option}]}
        response = await client.post("/v1.0/flows", json=body, headers=tenant.admin.headers)
        assert response.status_code == 400, (option, response.text)
    body = {"name": "ok", "actions": [{"id": "c", "type": "conversation_close", "option": {}}]}
    assert (await client.post("/v1.0/flows", json=body, headers=tenant.admin.headers)).status_code == 200
