"""Handoff actions (conversation_assign, _unassign, _tag), message_send on every channel (email
with its subject), sub-flows (flow_start) and flow versions, end to end on a running hub: real
PostgreSQL, Temporal dev server, the fake SMS and LINE providers and an aiosmtpd relay."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import secrets
import uuid

import msgspec
import pytest

from api.smtp_sink import SmtpSink
from hub.permissions import NIL_UUID
from hub.tables import Activeflow, EmailMessage, Event, FlowVersion
from tests.helpers import free_port, make_line_account, make_tenant, open_conversation, wait_for
from tests.integration.test_flows import finished_run, inbound, outgoing_texts, setup_flow
from tests.integration.test_webhooks import configure
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("worker")


async def updates_of(conversation_id) -> list[dict]:
    """The conversation's `conversation_updated` events in the outbox, as subscribers see them."""
    rows = (
        await Event.select(Event.data, Event.owner_id, Event.previous_owner_id)
        .where(Event.conversation_id == uuid.UUID(str(conversation_id)), Event.type == "conversation_updated")
        .order_by(Event.seq)
    )
    return [{**r, "data": msgspec.json.decode(r["data"])} for r in rows]


def projected(events: list[dict], agent_id) -> list[tuple]:
    """What a handoff changes, with the tenant's agent id written `agent` (tenants differ)."""

    def who(value) -> str:
        if value is None:
            return "none"
        return {str(agent_id): "agent", str(NIL_UUID): "nil"}.get(str(value), str(value))

    return [
        (
            who(e["owner_id"]),
            who(e["previous_owner_id"]),
            who(e["data"]["owner_id"]),
            e["data"]["owner_type"],
            tuple(e["data"]["tags"]),
        )
        for e in events
    ]


async def save(client, tenant, actions, name="flow"):
    return await client.post(
        "/v1.0/flows", json={"name": name, "actions": actions}, headers=tenant.admin.headers
    )


def refused(response, *words: str) -> str:
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message
    return message


# --- handoff actions ---------------------------------------------------------------------------


async def test_handoff_actions_produce_the_api_events(client):
    tenant = await make_tenant()
    actions = [
        {"id": "give", "type": "conversation_assign", "option": {"agent_id": str(tenant.agent.id)}},
        {"id": "mark", "type": "conversation_tag", "option": {"add": ["VIP", "billing"]}},
        {"id": "unmark", "type": "conversation_tag", "option": {"remove": ["billing"]}},
        {"id": "back", "type": "conversation_unassign", "option": {}},
        {"id": "give2", "type": "conversation_assign", "option": {"agent_id": str(tenant.agent.id)}},
        {"id": "say", "type": "conversation_send", "option": {"text": "owner ${conversation.owner_id}"}},
    ]
    tenant, flow = await setup_flow(client, actions, tenant=tenant)
    # Stored as the API stores tags: lowercased.
    assert flow["actions"][1]["option"] == {"add": ["vip", "billing"], "remove": []}
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    assert run["status"] == "ended", run["reason"]
    variables = msgspec.json.decode(run["variables"])
    assert variables["conversation.owner_id"] == str(tenant.agent.id)
    assert variables["conversation.tags"] == "vip"
    assert await outgoing_texts(tenant) == [f"owner {tenant.agent.id}"]
    by_flow = await updates_of(run["conversation_id"])

    # The same operations through the API, on a conversation of a tenant without a flow.
    other = await make_tenant()
    cid = await open_conversation(client, other)
    base = f"/v1.0/conversations/{cid}"
    admin = other.admin.headers
    for method, path, body in [
        ("PUT", base, {"owner_id": str(other.agent.id)}),
        ("POST", f"{base}/tags", {"tags": ["VIP", "billing"]}),
        ("DELETE", f"{base}/tags/billing", None),
        ("POST", f"{base}/unassign", None),
        ("PUT", base, {"owner_id": str(other.agent.id)}),
    ]:
        response = await client.request(method, path, json=body, headers=admin)
        assert response.status_code == 200, response.text
    by_api = await updates_of(cid)
    assert len(by_flow) == len(by_api) >= 5
    assert projected(by_flow, tenant.agent.id) == projected(by_api, other.agent.id)
    assert projected(by_flow, tenant.agent.id)[-5:] == [
        ("agent", "none", "agent", "agent", ()),
        ("agent", "none", "agent", "agent", ("vip", "billing")),
        ("agent", "none", "agent", "agent", ("vip",)),
        ("nil", "agent", "nil", "", ("vip",)),
        ("agent", "none", "agent", "agent", ("vip",)),
    ]
    mine = await client.get(f"/v1.0/conversations/{run['conversation_id']}", headers=tenant.admin.headers)
    assert (mine.json()["owner_id"], mine.json()["tags"]) == (str(tenant.agent.id), ["vip"])


async def test_an_agent_deleted_after_the_save_fails_the_run_with_the_reason(client):
    tenant = await make_tenant()
    actions = [
        {"id": "give", "type": "conversation_assign", "option": {"agent_id": str(tenant.other_agent.id)}}
    ]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    deleted = await client.delete(f"/v1.0/agents/{tenant.other_agent.id}", headers=tenant.admin.headers)
    assert deleted.status_code == 200, deleted.text
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    assert run["status"] == "failed"
    assert run["reason"].startswith("action give: ") and "agent" in run["reason"]


async def test_handoff_and_sub_flow_options_are_checked_when_saved(client):
    tenant, stranger = await make_tenant(), await make_tenant()
    foreign_flow = (await save(client, stranger, [{"id": "s", "type": "stop", "option": {}}])).json()
    assign = "conversation_assign"
    cases = [
        (
            [{"id": "a1", "type": assign, "option": {"agent_id": str(stranger.agent.id)}}],
            ["'a1'", assign, "agent_id"],
        ),
        ([{"id": "a2", "type": assign, "option": {"agent_id": str(uuid.uuid4())}}], ["'a2'", "agent_id"]),
        ([{"id": "a3", "type": assign, "option": {}}], ["'a3'", "agent_id"]),
        ([{"id": "u1", "type": "conversation_unassign", "option": {"x": 1}}], ["'u1'"]),
        ([{"id": "t1", "type": "conversation_tag", "option": {"add": ["no spaces"]}}], ["'t1'", "no spaces"]),
        ([{"id": "t2", "type": "conversation_tag", "option": {}}], ["'t2'", "add or remove"]),
        (
            [{"id": "t3", "type": "conversation_tag", "option": {"add": [f"t{i}" for i in range(21)]}}],
            ["'t3'"],
        ),
        (
            [{"id": "f1", "type": "flow_start", "option": {"flow_id": foreign_flow["id"]}}],
            ["'f1'", "flow_id"],
        ),
        ([{"id": "f2", "type": "flow_start", "option": {"flow_id": str(uuid.uuid4())}}], ["'f2'", "flow_id"]),
        ([{"id": "f3", "type": "flow_start", "option": {}}], ["'f3'", "flow_id"]),
    ]
    for actions, words in cases:
        refused(await save(client, tenant, actions), *words)
    # A deleted flow is not a target either.
    gone = (await save(client, tenant, [{"id": "s", "type": "stop", "option": {}}])).json()
    await client.delete(f"/v1.0/flows/{gone['id']}", headers=tenant.admin.headers)
    refused(
        await save(client, tenant, [{"id": "f4", "type": "flow_start", "option": {"flow_id": gone["id"]}}]),
        "'f4'",
        "flow_id",
    )
    # Nothing half-written: the tenant has the one (deleted) flow only.
    listed = await client.get("/v1.0/flows", headers=tenant.admin.headers)
    assert listed.json()["result"] == []


async def test_message_send_destinations_are_checked_for_the_account_channel(client):
    tenant = await make_tenant()
    line, _ = await make_line_account(tenant.customer_id)

    def send(account_id, destination, **extra):
        option = {"account_id": str(account_id), "destination": destination, "text": "x", **extra}
        return [{"id": "out", "type": "message_send", "option": option}]

    sms = tenant.account["id"]
    refused(await save(client, tenant, send(sms, "not a number")), "'out'", "destination", "sms")
    refused(await save(client, tenant, send(line["id"], "has space")), "'out'", "destination", "line")
    refused(await save(client, tenant, send(sms, "+14155550100", subject="Hi")), "'out'", "subject")
    # Substituted destinations are checked when the run has them.
    assert (await save(client, tenant, send(sms, "${conversation.peer.target}"))).status_code == 200
    assert (await save(client, tenant, send(sms, "+1 415 555 0100"))).status_code == 200


# --- message_send on every channel -------------------------------------------------------------


@pytest.fixture(scope="module")
async def relay():
    sink = await SmtpSink(port=free_port()).start()
    yield sink
    await sink.stop()


@pytest.fixture
async def sink(relay):
    relay.reset()
    return relay


async def email_account(client, tenant, sink: SmtpSink) -> dict:
    response = await client.post(
        "/v1.0/accounts",
        json={
            "type": "email",
            "name": "Support",
            "address": "support@shop.example",
            "secret": secrets.token_hex(16),
            "smtp_host": "127.0.0.1",
            "smtp_port": sink.port,
            "smtp_security": "none",
        },
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_message_send_by_email_carries_its_subject(client, sink):
    tenant = await make_tenant()
    account = await email_account(client, tenant, sink)
    actions = [
        {
            "id": "mail",
            "type": "message_send",
            "option": {
                "account_id": account["id"],
                "destination": "Bob@Example.com",
                "subject": "Order ${message.text}",
                "text": "Your order from ${conversation.peer.target}",
            },
        },
        {
            "id": "again",
            "type": "message_send",
            "option": {"account_id": account["id"], "destination": "bob@example.com", "text": "second"},
        },
    ]
    refused(
        await save(
            client, tenant, [{**actions[0], "option": {**actions[0]["option"], "destination": "bob"}}]
        ),
        "destination",
    )
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await inbound(client, tenant, text="42")
    [run] = await finished_run(tenant)
    assert run["status"] == "ended", run["reason"]
    await wait_for(lambda: asyncio.sleep(0, result=len(sink.received) == 2))
    first, second = (email.message_from_bytes(r.data, policy=email.policy.default) for r in sink.received)
    assert sink.received[0].recipients == ["bob@example.com"]
    assert first["Subject"] == "Order 42"
    assert first.get_body(("plain",)).get_content().strip() == "Your order from +14155551234"
    # The next message of that conversation threads to the subject the flow gave it.
    assert second["Subject"] == "Re: Order 42"
    rows = (
        await EmailMessage.select()
        .where(EmailMessage.customer_id == tenant.customer_id)
        .order_by(EmailMessage.tm_create)
    )
    assert [r["subject"] for r in rows] == ["Order 42", "Re: Order 42"]
    assert rows[0]["header_message_id"] == first["Message-ID"]


async def test_message_send_by_line(client, fake_line):
    tenant = await make_tenant()
    line, _ = await make_line_account(tenant.customer_id)
    user = "U" + uuid.uuid4().hex
    actions = [
        {
            "id": "push",
            "type": "message_send",
            "option": {"account_id": str(line["id"]), "destination": user, "text": "hello ${message.text}"},
        }
    ]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await inbound(client, tenant, text="there")
    [run] = await finished_run(tenant)
    assert run["status"] == "ended", run["reason"]
    await wait_for(lambda: asyncio.sleep(0, result=len(fake_line.received) == 1))
    assert fake_line.received[0]["to"] == user
    assert fake_line.received[0]["messages"] == [{"type": "text", "text": "hello there"}]
    variables = msgspec.json.decode(run["variables"])
    assert variables["push.conversation.id"] != str(run["conversation_id"])


# --- sub-flows ---------------------------------------------------------------------------------


async def test_flow_start_runs_a_sub_flow_and_reads_its_variables(client):
    tenant = await make_tenant()
    child = (
        await save(
            client,
            tenant,
            [
                {"id": "set", "type": "variable_set", "option": {"name": "answer", "value": "${greeting}!"}},
                {"id": "say", "type": "conversation_send", "option": {"text": "child: ${greeting}"}},
            ],
            name="child",
        )
    ).json()
    actions = [
        {
            "id": "sub",
            "type": "flow_start",
            "option": {"flow_id": child["id"], "variables": {"greeting": "hi ${message.text}"}},
        },
        {
            "id": "after",
            "type": "conversation_send",
            "option": {"text": "parent: ${sub.answer} ${sub.activeflow.status}"},
        },
    ]
    tenant, parent_flow = await setup_flow(client, actions, tenant=tenant, name="parent")
    await inbound(client, tenant, text="bob")
    done = await finished_run(tenant, count=2)
    parent = next(r for r in done if r["parent_id"] is None)
    sub = next(r for r in done if r["parent_id"] is not None)
    assert parent["status"] == sub["status"] == "ended", (parent["reason"], sub["reason"])
    assert await outgoing_texts(tenant) == ["child: hi bob", "parent: hi bob! ended"]
    # The sub-flow's own row: on the parent's conversation, pointing at its parent.
    assert sub["parent_id"] == parent["id"] and sub["flow_id"] == uuid.UUID(child["id"])
    assert (sub["conversation_id"], sub["account_id"]) == (parent["conversation_id"], parent["account_id"])
    assert sub["workflow_id"] == f"{parent['workflow_id']}/sub"
    assert (sub["flow_version"], sub["flow_name"]) == (1, "child")
    shown = await client.get(f"/v1.0/activeflows/{sub['id']}", headers=tenant.admin.headers)
    assert shown.json()["parent_id"] == str(parent["id"]) and shown.json()["flow_version"] == 1
    assert shown.json()["variables"]["activeflow.parent_id"] == str(parent["id"])
    variables = msgspec.json.decode(parent["variables"])
    assert variables["sub.answer"] == "hi bob!" and variables["sub.activeflow.id"] == str(sub["id"])
    assert variables["flow.id"] == parent_flow["id"]
    listed = await client.get(
        "/v1.0/activeflows",
        params={"conversation_id": str(parent["conversation_id"])},
        headers=tenant.admin.headers,
    )
    assert {r["id"] for r in listed.json()["result"]} == {str(parent["id"]), str(sub["id"])}


async def test_a_failing_sub_flow_lets_the_parent_go_on(client):
    tenant = await make_tenant()
    # The sub-flow fails at run time: it reaches the safety cap of executed actions.
    child_actions = [
        {"id": "a", "type": "variable_set", "option": {"name": "x", "value": "1"}},
        {"id": "loop", "type": "goto", "option": {"target_id": "a", "loop_count": 1000}},
    ]
    child = (await save(client, tenant, child_actions, name="c")).json()
    actions = [
        {
            "id": "sub",
            "type": "flow_start",
            "option": {"flow_id": child["id"], "variables": {"host": "127.0.0.1"}},
        },
        {"id": "say", "type": "conversation_send", "option": {"text": "sub ${sub.activeflow.status}"}},
    ]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await inbound(client, tenant)
    done = await finished_run(tenant, count=2)
    parent = next(r for r in done if r["parent_id"] is None)
    sub = next(r for r in done if r["parent_id"] is not None)
    assert (parent["status"], sub["status"]) == ("ended", "failed")
    assert "safety cap" in sub["reason"]
    assert await outgoing_texts(tenant) == ["sub failed"]


async def test_a_sub_flow_deleted_after_the_save_fails_the_action(client):
    tenant = await make_tenant()
    child = (
        await save(client, tenant, [{"id": "nap", "type": "sleep", "option": {"duration_ms": 1}}], name="c")
    ).json()
    actions = [{"id": "sub", "type": "flow_start", "option": {"flow_id": child["id"]}}]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await client.delete(f"/v1.0/flows/{child['id']}", headers=tenant.admin.headers)
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    assert run["status"] == "failed" and run["reason"].startswith("action sub: "), run["reason"]
    assert "flow_id" in run["reason"]


async def test_stopping_a_parent_stops_its_sub_flow(client):
    tenant = await make_tenant()
    child = (
        await save(client, tenant, [{"id": "nap", "type": "sleep", "option": {"duration_ms": 600_000}}])
    ).json()
    actions = [
        {"id": "sub", "type": "flow_start", "option": {"flow_id": child["id"]}},
        {"id": "say", "type": "conversation_send", "option": {"text": "never"}},
    ]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await inbound(client, tenant)

    async def sub_running():
        return (
            await Activeflow.select()
            .where(Activeflow.customer_id == tenant.customer_id, Activeflow.parent_id.is_not_null())
            .first()
        )

    sub = await wait_for(sub_running)
    parent_id = sub["parent_id"]
    stopped = await client.post(f"/v1.0/activeflows/{parent_id}/stop", headers=tenant.admin.headers)
    assert stopped.status_code == 200, stopped.text
    done = await finished_run(tenant, count=2)
    assert {r["status"] for r in done} == {"stopped"}
    assert await outgoing_texts(tenant) == []


async def test_sub_flow_cycles_and_depth_are_refused_when_saved(client):
    tenant = await make_tenant()
    headers = tenant.admin.headers

    def start(flow_id, action_id="go"):
        return {"id": action_id, "type": "flow_start", "option": {"flow_id": flow_id}}

    a = (await save(client, tenant, [{"id": "s", "type": "stop", "option": {}}], name="a")).json()
    b = (await save(client, tenant, [start(a["id"])], name="b")).json()
    # a -> b -> a, and a -> a.
    cycle = await client.put(
        f"/v1.0/flows/{a['id']}", json={"actions": [start(b["id"], "back")]}, headers=headers
    )
    refused(cycle, "'back'", "cycle", f"'a' ({a['id']}) -> 'b' ({b['id']}) -> 'a' ({a['id']})")
    itself = await client.put(
        f"/v1.0/flows/{a['id']}", json={"actions": [start(a["id"], "me")]}, headers=headers
    )
    refused(itself, "'me'", "cycle")
    assert (await client.get(f"/v1.0/flows/{a['id']}", headers=headers)).json()["version"] == 1

    # A chain of five flow_start hops is fine; a sixth is refused, from either end.
    chain = [(await save(client, tenant, [{"id": "s", "type": "stop", "option": {}}], name="f5")).json()]
    for level in range(4, -1, -1):
        chain.insert(0, (await save(client, tenant, [start(chain[0]["id"])], name=f"f{level}")).json())
    assert [f["name"] for f in chain] == ["f0", "f1", "f2", "f3", "f4", "f5"]
    deeper = await save(client, tenant, [start(chain[0]["id"], "top")], name="top")
    refused(deeper, "'top'", "6 deep", "at most 5", "'f5'")
    leaf = (await save(client, tenant, [{"id": "s", "type": "stop", "option": {}}], name="leaf")).json()
    below = await client.put(
        f"/v1.0/flows/{chain[-1]['id']}", json={"actions": [start(leaf["id"], "down")]}, headers=headers
    )
    refused(below, "'down'", "6 deep", "'f0'", "'leaf'")


# --- flow versions -----------------------------------------------------------------------------


async def test_flow_versions_are_listed_newest_first(client):
    tenant = await make_tenant()
    headers = tenant.admin.headers
    flow = (
        await save(client, tenant, [{"id": "v", "type": "conversation_send", "option": {"text": "v1"}}])
    ).json()
    for text in ("v2", "v3"):
        changed = await client.put(
            f"/v1.0/flows/{flow['id']}",
            json={"actions": [{"id": "v", "type": "conversation_send", "option": {"text": text}}]},
            headers=headers,
        )
        assert changed.status_code == 200, changed.text
    await client.put(f"/v1.0/flows/{flow['id']}", json={"name": "renamed"}, headers=headers)  # no new version
    path = f"/v1.0/flows/{flow['id']}/versions"
    listed = await client.get(path, headers=tenant.agent.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert [v["version"] for v in body["result"]] == [3, 2, 1] and body["next_page_token"] == ""
    assert [v["actions"][0]["option"]["text"] for v in body["result"]] == ["v3", "v2", "v1"]
    assert all(v["flow_id"] == flow["id"] and v["tm_create"] for v in body["result"])
    first = (await client.get(path, params={"page_size": 2}, headers=headers)).json()
    assert [v["version"] for v in first["result"]] == [3, 2] and first["next_page_token"] == "2"
    rest = (await client.get(path, params={"page_size": 2, "page_token": "2"}, headers=headers)).json()
    assert [v["version"] for v in rest["result"]] == [1] and rest["next_page_token"] == ""
    refused(await client.get(path, params={"page_token": "x"}, headers=headers), "page_token")
    stranger = await make_tenant()
    assert (await client.get(path, headers=stranger.admin.headers)).status_code == 404
    assert (await client.get(f"/v1.0/flows/{uuid.uuid4()}/versions", headers=headers)).status_code == 404


async def test_runs_started_by_messages_have_no_parent(client):
    tenant, _ = await setup_flow(client, [{"id": "s", "type": "stop", "option": {}}])
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    shown = await client.get(f"/v1.0/activeflows/{run['id']}", headers=tenant.admin.headers)
    assert shown.json()["parent_id"] is None and shown.json()["flow_version"] == 1
    assert (
        await Activeflow.count().where(
            Activeflow.parent_id.is_not_null(), Activeflow.customer_id == tenant.customer_id
        )
        == 0
    )


async def test_a_cycle_written_around_the_checks_stops_at_the_depth_limit(client):
    """Saving refuses cycles; one made anyway (two concurrent edits, or by hand) ends at depth 5:
    the sixth flow_start fails its action, and each parent goes on."""
    tenant, flow = await setup_flow(client, [{"id": "s", "type": "stop", "option": {}}])
    looping = json.dumps([{"id": "again", "type": "flow_start", "option": {"flow_id": flow["id"]}}])
    await FlowVersion.update({FlowVersion.actions: looping}).where(
        FlowVersion.flow_id == uuid.UUID(flow["id"])
    )
    await inbound(client, tenant)
    done = await finished_run(tenant, count=6, within=60)
    assert len(done) == 6
    failed = [r for r in done if r["status"] == "failed"]
    assert len(failed) == 1 and "nest at most 5 deep" in failed[0]["reason"], [r["reason"] for r in done]
    assert sum(r["parent_id"] is None for r in done) == 1
    assert failed[0]["workflow_id"].endswith("/again" * 5)


@pytest.mark.usefixtures("dispatchers")
async def test_handoff_events_reach_the_customers_webhook_signed(client):
    tenant = await make_tenant()
    receiver = await Receiver().start()
    try:
        await configure(client, tenant, receiver)
        actions = [
            {"id": "give", "type": "conversation_assign", "option": {"agent_id": str(tenant.agent.id)}},
            {"id": "mark", "type": "conversation_tag", "option": {"add": ["hot"]}},
        ]
        tenant, _ = await setup_flow(client, actions, tenant=tenant)
        await inbound(client, tenant)
        [run] = await finished_run(tenant)
        assert run["status"] == "ended", run["reason"]

        async def handoff_delivered():
            updates = [
                r.body["data"]
                for r in receiver.received
                if r.body["type"] == "conversation_updated"
                and r.body["data"]["id"] == str(run["conversation_id"])
            ]
            return updates if any(u["tags"] == ["hot"] for u in updates) else None

        updates = await wait_for(handoff_delivered, within=30)
        assert [(u["owner_id"], u["tags"]) for u in updates][-2:] == [
            (str(tenant.agent.id), []),
            (str(tenant.agent.id), ["hot"]),
        ]
        assert all(r.verified_by for r in receiver.received)
    finally:
        await receiver.stop()
