"""Flows and activeflows against a real Temporal dev server, PostgreSQL and the fake providers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from litestar import Litestar, Request, get, post
from litestar.params import FromPath
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.flows import FlowActivities
from activities.inputs import FlowHttpInput
from activities.messages import MessageActivities
from api import temporal as hub_temporal
from api.fakes import start_server
from api.worker import recover_activeflows
from hub.tables import Activeflow, Conversation, Message
from tests.helpers import free_port, make_tenant, signed_sms, sms_params, wait_for

pytestmark = pytest.mark.usefixtures("worker")
REPO = Path(__file__).resolve().parents[2]


async def setup_flow(client, actions: list[dict], tenant=None, name="test flow"):
    tenant = tenant or await make_tenant()
    response = await client.post(
        "/v1.0/flows", json={"name": name, "actions": actions}, headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text
    flow = response.json()
    attach = await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow["id"]},
        headers=tenant.admin.headers,
    )
    assert attach.status_code == 200, attach.text
    return tenant, flow


async def inbound(client, tenant, text="hello", sender="+14155551234", sid=None):
    params = sms_params(sender=sender, body=text, sid=sid)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    return response, params["MessageSid"]


async def runs_of(tenant) -> list[dict]:
    return await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id)


async def finished_run(tenant, count: int = 1, within: float = 20) -> list[dict]:
    async def check():
        rows = await runs_of(tenant)
        done = [r for r in rows if r["status"] != "running"]
        return done if len(done) >= count else None

    return await wait_for(check, within=within)


async def outgoing_texts(tenant) -> list[str]:
    rows = (
        await Message.select(Message.text)
        .where(Message.customer_id == tenant.customer_id, Message.direction == "outgoing")
        .order_by(Message.tm_create)
    )
    return [r["text"] for r in rows]


def reply(text: str, action_id: str = "reply") -> dict:
    return {"id": action_id, "type": "conversation_send", "option": {"text": text}}


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "named"),
    [
        ([{"id": "a1", "type": "teleport", "option": {}}], "'a1'"),
        ([{"id": "say", "type": "conversation_send", "option": {"txt": "x"}}], "'say'"),
        ([{"id": "nap", "type": "sleep", "option": {"duration_ms": "long"}}], "'nap'"),
        ([reply("a", "dup"), reply("b", "dup")], "'dup'"),
        ([{"id": "jump", "type": "goto", "option": {"target_id": "nowhere", "loop_count": 1}}], "'jump'"),
        ([{**reply("x", "first"), "next_id": "missing"}], "'first'"),
        (
            [
                {
                    "id": "pick",
                    "type": "branch",
                    "option": {"variable": "message.text", "targets": {"yes": "ghost"}},
                }
            ],
            "'pick'",
        ),
        (
            [
                {
                    "id": "cmp",
                    "type": "condition_variable",
                    "option": {"variable": "v", "operator": "~=", "value": "1", "false_target_id": "cmp"},
                }
            ],
            "'cmp'",
        ),
    ],
)
async def test_validation_names_the_action(client, actions, named):
    tenant = await make_tenant()
    response = await client.post(
        "/v1.0/flows", json={"name": "bad", "actions": actions}, headers=tenant.admin.headers
    )
    assert response.status_code == 400, response.text
    assert named in response.json()["error"]["message"]


async def test_flow_crud_permissions_and_references(client):
    tenant = await make_tenant()
    other = await make_tenant()
    body = {"name": "greeter", "detail": "says hi", "actions": [reply("hi ${conversation.peer.target}")]}
    assert (await client.post("/v1.0/flows", json=body, headers=tenant.agent.headers)).status_code == 403
    flow = (await client.post("/v1.0/flows", json=body, headers=tenant.admin.headers)).json()
    assert flow["actions"][0]["option"] == {"text": "hi ${conversation.peer.target}"}
    assert (await client.get(f"/v1.0/flows/{flow['id']}", headers=tenant.agent.headers)).status_code == 200
    assert (await client.get(f"/v1.0/flows/{flow['id']}", headers=other.admin.headers)).status_code == 404
    updated = await client.put(
        f"/v1.0/flows/{flow['id']}", json={"name": "renamed"}, headers=tenant.manager.headers
    )
    assert updated.json()["name"] == "renamed" and updated.json()["actions"] == flow["actions"]
    # message_send must name an account of the same customer; accounts must name own flows.
    foreign = {
        "id": "out",
        "type": "message_send",
        "option": {"account_id": str(other.account["id"]), "destination": "+14155550000", "text": "x"},
    }
    response = await client.post("/v1.0/flows", json={"actions": [foreign]}, headers=tenant.admin.headers)
    assert response.status_code == 400 and "'out'" in response.json()["error"]["message"]
    response = await client.put(
        f"/v1.0/accounts/{other.account['id']}",
        json={"message_flow_id": flow["id"]},
        headers=other.admin.headers,
    )
    assert response.status_code == 400
    assert (await client.delete(f"/v1.0/flows/{flow['id']}", headers=tenant.admin.headers)).status_code == 200
    listed = (await client.get("/v1.0/flows", headers=tenant.admin.headers)).json()["result"]
    assert flow["id"] not in [f["id"] for f in listed]


async def test_hub_flows_apply_registers_then_updates(settings, tmp_path, pg):
    tenant = await make_tenant()
    spec = {"name": "applied", "detail": "from a file", "actions": [reply("v1")]}
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "HUB_DATABASE_URL": settings.database_url}
    command = [
        sys.executable,
        "-m",
        "api.cli",
        "flows",
        "apply",
        str(path),
        "--customer",
        str(tenant.customer_id),
    ]

    def cli():
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)

    first = await asyncio.to_thread(cli)
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout.strip().splitlines()[-1])
    spec["actions"] = [reply("v2")]
    path.write_text(json.dumps(spec))
    second = await asyncio.to_thread(cli)
    assert second.returncode == 0, second.stderr
    updated = json.loads(second.stdout.strip().splitlines()[-1])
    assert updated["id"] == created["id"] and updated["actions"][0]["option"]["text"] == "v2"
    path.write_text(json.dumps({"name": "broken", "actions": [{"id": "x", "type": "nope"}]}))
    bad = await asyncio.to_thread(cli)
    assert bad.returncode != 0 and "'x'" in bad.stderr


# --- triggering -------------------------------------------------------------------------------


async def workflows_of(temporal_env, conversation_id) -> list:
    query = f'ConversationId = "{conversation_id}" AND WorkflowType = "Activeflow"'
    return [w async for w in temporal_env.client.list_workflows(query)]


async def test_unassigned_inbound_runs_flow_and_replies(client, fake_sms, temporal_env):
    tenant, flow = await setup_flow(client, [reply("Thanks ${conversation.peer.target}: ${message.text}")])
    response, sid = await inbound(client, tenant, text="where is my order?")
    assert response.status_code == 200
    [run] = await finished_run(tenant)
    assert run["status"] == "ended" and json.loads(run["executed_actions"]) == ["reply"]
    message = await Message.select().where(Message.provider_message_id == sid).first()
    assert run["workflow_id"] == f"activeflow-{message['id']}"
    await wait_for(lambda: asyncio.sleep(0, result=len(fake_sms.received) == 1))
    assert fake_sms.received[0]["body"] == "Thanks +14155551234: where is my order?"
    sent = await Message.select().where(
        Message.customer_id == tenant.customer_id, Message.direction == "outgoing"
    )
    assert [str(m["activeflow_id"]) for m in sent] == [str(run["id"])]
    # Operators find it by conversation in the Temporal UI; no phone number in the id.
    [execution] = await wait_for(lambda: workflows_of(temporal_env, run["conversation_id"]))
    assert execution.id == run["workflow_id"] and "+1415" not in execution.id
    described = await temporal_env.client.get_workflow_handle(execution.id).describe()
    attributes = described.typed_search_attributes
    assert attributes.get(hub_temporal.FLOW_ID) == flow["id"]
    assert attributes.get(hub_temporal.CUSTOMER_ID) == str(tenant.customer_id)
    assert attributes.get(hub_temporal.ACCOUNT_ID) == str(tenant.account["id"])
    assert (await described.memo())["flow_name"] == "test flow"
    api_run = (await client.get(f"/v1.0/activeflows/{run['id']}", headers=tenant.admin.headers)).json()
    assert api_run["status"] == "ended" and api_run["variables"]["message.text"] == "where is my order?"
    listed = await client.get(
        f"/v1.0/activeflows?conversation_id={run['conversation_id']}&status=ended",
        headers=tenant.admin.headers,
    )
    assert [r["id"] for r in listed.json()["result"]] == [str(run["id"])]


async def test_assigned_conversation_starts_no_flow_until_unassigned(client, temporal_env):
    tenant, _ = await setup_flow(client, [reply("auto")])
    tenant.account["message_flow_id"] = None
    # Open the conversation while the account has no flow, then assign it.
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}", json={"message_flow_id": None}, headers=tenant.admin.headers
    )
    await inbound(client, tenant, text="first")
    conversation = await Conversation.select().where(Conversation.customer_id == tenant.customer_id).first()
    flows = (await client.get("/v1.0/flows", headers=tenant.admin.headers)).json()["result"]
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flows[0]["id"]},
        headers=tenant.admin.headers,
    )
    assigned = await client.put(
        f"/v1.0/conversations/{conversation['id']}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assigned.status_code == 200
    response, _ = await inbound(client, tenant, text="to the agent")
    assert response.status_code == 200
    await asyncio.sleep(0.5)
    assert await runs_of(tenant) == []
    assert await workflows_of(temporal_env, conversation["id"]) == []

    unassigned = await client.post(
        f"/v1.0/conversations/{conversation['id']}/unassign", headers=tenant.agent.headers
    )
    assert unassigned.status_code == 200
    await inbound(client, tenant, text="back to the flow")
    [run] = await finished_run(tenant)
    assert json.loads(run["variables"])["message.text"] == "back to the flow"
    executions = await wait_for(lambda: workflows_of(temporal_env, conversation["id"]))
    assert len(executions) == 1


async def test_assigning_does_not_stop_a_sleeping_flow(client, fake_sms):
    actions = [
        reply("before", "one"),
        {"id": "nap", "type": "sleep", "option": {"duration_ms": 2000}},
        reply("after", "two"),
    ]
    tenant, _ = await setup_flow(client, actions)
    await inbound(client, tenant)
    run = await wait_for(lambda: runs_of(tenant))
    conversation_id = run[0]["conversation_id"]
    await wait_for(lambda: outgoing_texts(tenant))
    response = await client.put(
        f"/v1.0/conversations/{conversation_id}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200
    [done] = await finished_run(tenant)
    assert done["status"] == "ended"
    assert await outgoing_texts(tenant) == ["before", "after"]


async def test_twenty_concurrent_deliveries_start_one_workflow(client, temporal_env):
    tenant, _ = await setup_flow(client, [reply("once")])
    params = sms_params(sid="SMsame" + uuid.uuid4().hex)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    responses = await asyncio.gather(*[client.post(path, content=body, headers=headers) for _ in range(20)])
    assert {r.status_code for r in responses} == {200}
    [run] = await finished_run(tenant)
    executions = await wait_for(lambda: workflows_of(temporal_env, run["conversation_id"]))
    assert len(executions) == 1
    assert await outgoing_texts(tenant) == ["once"]


async def test_fault_between_commit_and_start_is_recovered_once(client, settings, temporal_env, monkeypatch):
    tenant, _ = await setup_flow(client, [reply("recovered")])

    async def temporal_down(*args, **kwargs):
        raise RPCError("injected: Temporal unreachable", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", temporal_down)
    response, sid = await inbound(client, tenant)
    assert response.status_code == 503  # the provider will retry
    [pending] = await runs_of(tenant)
    assert pending["started"] is False
    assert await Message.count().where(Message.provider_message_id == sid) == 1
    monkeypatch.undo()

    started = await recover_activeflows(temporal_env.client, settings, older_than_s=0)
    assert started >= 1
    # The provider's retry arrives after recovery: stored once, started once.
    retry, _ = await inbound(client, tenant, sid=sid)
    assert retry.status_code == 200
    [run] = await finished_run(tenant)
    assert run["status"] == "ended"
    executions = await wait_for(lambda: workflows_of(temporal_env, run["conversation_id"]))
    assert len(executions) == 1
    assert await outgoing_texts(tenant) == ["recovered"]


async def test_provider_retry_after_503_starts_the_flow(client, monkeypatch):
    tenant, _ = await setup_flow(client, [reply("after retry")])

    async def temporal_down(*args, **kwargs):
        raise RPCError("injected", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", temporal_down)
    response, sid = await inbound(client, tenant)
    assert response.status_code == 503
    monkeypatch.undo()
    retry, _ = await inbound(client, tenant, sid=sid)
    assert retry.status_code == 200
    [run] = await finished_run(tenant)
    assert run["status"] == "ended"
    assert await outgoing_texts(tenant) == ["after retry"]


# --- actions ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def receiver():
    """A customer's HTTP endpoint for webhook_send and fetch."""
    seen: list[dict] = []

    @post("/hook", status_code=200)
    async def hook(request: Request) -> dict:
        seen.append({"method": request.method, "body": await request.json()})
        return {"ticket": {"id": 42, "state": "open"}, "ok": True}

    @get("/order/{number:str}")
    async def order(number: FromPath[str]) -> dict:
        return {"number": number, "status": "shipped", "items": [{"sku": "A1"}]}

    port = free_port()
    server, task = await start_server(Litestar([hook, order]), "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    await task


async def run_flow(client, actions, text="hello"):
    tenant, _ = await setup_flow(client, actions)
    await inbound(client, tenant, text=text)
    [run] = await finished_run(tenant)
    return tenant, run, json.loads(run["variables"]), json.loads(run["executed_actions"])


async def test_message_send_opens_a_conversation_with_a_new_peer(client, fake_sms):
    tenant = await make_tenant()
    actions = [
        {
            "id": "notify",
            "type": "message_send",
            "option": {
                "account_id": str(tenant.account["id"]),
                "destination": "+1 415 555 0199",
                "text": "New message from ${conversation.peer.target}",
            },
        }
    ]
    tenant, _ = await setup_flow(client, actions, tenant=tenant)
    await inbound(client, tenant)
    [run] = await finished_run(tenant)
    assert run["status"] == "ended"
    rooms = await Conversation.select().where(Conversation.customer_id == tenant.customer_id)
    assert sorted(r["peer_target"] for r in rooms) == ["+14155550199", "+14155551234"]
    await wait_for(lambda: asyncio.sleep(0, result=len(fake_sms.received) == 1))
    assert fake_sms.received[0]["to"] == "+14155550199"
    assert fake_sms.received[0]["body"] == "New message from +14155551234"


async def test_webhook_send_and_fetch_fill_variables(client, receiver):
    base, seen = receiver
    actions = [
        {
            "id": "tell",
            "type": "webhook_send",
            "option": {
                "url": f"{base}/hook",
                "body": {"text": "${message.text}", "from": "${conversation.peer.target}"},
                "wait_response": True,
            },
        },
        {
            "id": "look",
            "type": "fetch",
            "option": {"url": f"{base}/order/${{message.text}}", "into": "order"},
        },
        reply(
            "ticket ${webhook.response.ticket.id} order ${order.number} "
            "is ${order.status} (${order.items.0.sku})"
        ),
    ]
    tenant, run, variables, _ = await run_flow(client, actions, text="A-100")
    assert run["status"] == "ended", run["reason"]
    assert seen[-1] == {"method": "POST", "body": {"text": "A-100", "from": "+14155551234"}}
    assert variables["webhook.status_code"] == "200" and variables["webhook.response.ok"] == "true"
    assert await outgoing_texts(tenant) == ["ticket 42 order A-100 is shipped (A1)"]


async def test_variable_set_and_unknown_names(client):
    actions = [
        {
            "id": "set",
            "type": "variable_set",
            "option": {"name": "greeting", "value": "Hi ${conversation.peer.target}"},
        },
        reply("${greeting}! [${no.such.variable}]"),
    ]
    tenant, run, variables, _ = await run_flow(client, actions)
    assert variables["greeting"] == "Hi +14155551234"
    assert await outgoing_texts(tenant) == ["Hi +14155551234! []"]


async def test_branch_by_message_text(client):
    actions = [
        {
            "id": "menu",
            "type": "branch",
            "option": {
                "variable": "message.text",
                "targets": {"1": "sales", "2": "support"},
                "default_target_id": "help",
            },
        },
        {**reply("sales here", "sales"), "next_id": "end"},
        {**reply("support here", "support"), "next_id": "end"},
        reply("press 1 or 2", "help"),
        {"id": "end", "type": "stop", "option": {}},
    ]
    for text, expected in (("2", ["support here"]), ("hello", ["press 1 or 2"])):
        tenant, run, _, executed = await run_flow(client, actions, text=text)
        assert await outgoing_texts(tenant) == expected
        assert executed[-1] == "end"


async def test_condition_variable_and_goto_loop(client):
    actions = [
        {"id": "init", "type": "variable_set", "option": {"name": "n", "value": "0"}},
        {
            "id": "check",
            "type": "condition_variable",
            "option": {
                "variable": "message.text",
                "operator": "contains",
                "value": "loop",
                "false_target_id": "bye",
            },
        },
        reply("round", "say"),
        {"id": "again", "type": "goto", "option": {"target_id": "say", "loop_count": 2}},
        reply("bye", "bye"),
    ]
    tenant, _, _, executed = await run_flow(client, actions, text="please loop")
    assert await outgoing_texts(tenant) == ["round", "round", "round", "bye"]
    assert executed == ["init", "check", "say", "again", "say", "again", "say", "again", "bye"]
    tenant, _, _, executed = await run_flow(client, actions, text="no thanks")
    assert await outgoing_texts(tenant) == ["bye"] and executed == ["init", "check", "bye"]


async def test_numeric_comparison(client):
    actions = [
        {
            "id": "big",
            "type": "condition_variable",
            "option": {"variable": "message.text", "operator": ">", "value": "9", "false_target_id": "small"},
        },
        {**reply("big", "say_big"), "next_id": "end"},
        reply("small", "small"),
        {"id": "end", "type": "stop", "option": {}},
    ]
    tenant, *_ = await run_flow(client, actions, text="10")  # as strings "10" < "9"
    assert await outgoing_texts(tenant) == ["big"]


async def test_sleep_and_stop_actions(client):
    actions = [
        {"id": "nap", "type": "sleep", "option": {"duration_ms": 300}},
        {"id": "halt", "type": "stop", "option": {}},
        reply("never sent"),
    ]
    tenant, run, _, executed = await run_flow(client, actions)
    assert run["status"] == "ended" and executed == ["nap", "halt"]
    assert await outgoing_texts(tenant) == []
    assert run["tm_end"] - run["tm_create"] >= timedelta(milliseconds=300)


async def test_action_cap_fails_the_run(client):
    actions = [
        {"id": "a", "type": "variable_set", "option": {"name": "x", "value": "1"}},
        {"id": "loop", "type": "goto", "option": {"target_id": "a", "loop_count": 1000}},
    ]
    _, run, _, executed = await run_flow(client, actions)
    assert run["status"] == "failed" and "1000" in run["reason"]
    assert len(executed) == 1000


async def test_stop_through_the_api(client, temporal_env):
    actions = [{"id": "wait", "type": "sleep", "option": {"duration_ms": 60_000}}, reply("too late")]
    tenant, _ = await setup_flow(client, actions)
    await inbound(client, tenant)
    [run] = await wait_for(lambda: runs_of(tenant))
    live = await wait_for(
        lambda: _get_json(client, f"/v1.0/activeflows/{run['id']}", tenant.admin.headers, "current_action_id")
    )
    assert live["current_action_id"] == "wait" and live["executed_actions"] == ["wait"]
    refused = await client.post(f"/v1.0/activeflows/{run['id']}/stop", headers=tenant.agent.headers)
    assert refused.status_code == 403  # stopping is a flow write: admin or manager only
    stopped = await client.post(f"/v1.0/activeflows/{run['id']}/stop", headers=tenant.manager.headers)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    handle = temporal_env.client.get_workflow_handle(run["workflow_id"])
    assert await asyncio.wait_for(handle.result(), 20) == "stopped"
    [final] = await runs_of(tenant)
    assert final["status"] == "stopped" and await outgoing_texts(tenant) == []
    again = await client.post(f"/v1.0/activeflows/{run['id']}/stop", headers=tenant.admin.headers)
    assert again.status_code == 409


async def _get_json(client, url, headers, key):
    body = (await client.get(url, headers=headers)).json()
    return body if body.get(key) else None


async def test_flow_http_refuses_private_targets(settings, pg):
    """Flow actions call customer-given URLs: the webhook target guard applies to them too."""
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    async with httpx.AsyncClient() as http:
        flows = FlowActivities(http, guarded, MessageActivities(http, guarded))
        for url in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://10.1.2.3/x", "http://[::1]:9/"):
            with pytest.raises(ApplicationError, match="target refused"):
                await ActivityEnvironment().run(flows.http_call, FlowHttpInput(url=url))
