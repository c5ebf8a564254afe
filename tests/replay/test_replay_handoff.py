"""Determinism guard for the handoff and sub-flow actions: recorded runs of conversation_assign,
conversation_tag, conversation_unassign, message_send with a subject and flow_start (the parent
and its sub-flow) replay against the current workflow code. HUB_RECORD_HISTORIES=1 re-records."""

from __future__ import annotations

import json
import os

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from api.worker import WORKFLOWS
from hub.tables import Activeflow
from tests.helpers import make_tenant, signed_sms, sms_params, wait_for
from tests.replay.test_replay import HISTORIES

RECORDED = (
    "activeflow_versioned_handoff",
    "activeflow_versioned_flow_start",
    "activeflow_versioned_sub_flow",
)


def test_handoff_histories_are_recorded():
    assert {p.stem for p in HISTORIES.glob("*.json")} >= set(RECORDED)


async def post_flow(client, tenant, name, actions) -> dict:
    response = await client.post(
        "/v1.0/flows", json={"name": name, "actions": actions}, headers=tenant.admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


async def run_flow(client, temporal_env, tenant, flow, runs: int = 1) -> list[dict]:
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow["id"]},
        headers=tenant.admin.headers,
    )
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(body="go"))
    assert (await client.post(path, content=body, headers=headers)).status_code == 200

    async def finished():
        rows = await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id)
        done = [r for r in rows if r["status"] != "running"]
        return done if len(done) == runs else None

    return await wait_for(finished)


@pytest.mark.usefixtures("worker")
async def test_fresh_handoff_histories_replay(client, temporal_env):
    histories: dict[str, WorkflowHistory] = {}
    tenant = await make_tenant()
    handoff = await post_flow(
        client,
        tenant,
        "handoff",
        [
            {"id": "give", "type": "conversation_assign", "option": {"agent_id": str(tenant.agent.id)}},
            {"id": "mark", "type": "conversation_tag", "option": {"add": ["vip"], "remove": ["old"]}},
            {"id": "back", "type": "conversation_unassign", "option": {}},
            {
                "id": "note",
                "type": "message_send",
                "option": {
                    "account_id": str(tenant.account["id"]),
                    "destination": "+14155550142",
                    "text": "tagged ${conversation.tags}",
                },
            },
        ],
    )
    [run] = await run_flow(client, temporal_env, tenant, handoff)
    assert run["status"] == "ended", run["reason"]
    histories["activeflow_versioned_handoff"] = await temporal_env.client.get_workflow_handle(
        run["workflow_id"]
    ).fetch_history()

    tenant = await make_tenant()
    child = await post_flow(
        client,
        tenant,
        "child",
        [
            {"id": "set", "type": "variable_set", "option": {"name": "answer", "value": "${greeting}"}},
            {"id": "say", "type": "conversation_send", "option": {"text": "child ${greeting}"}},
        ],
    )
    parent = await post_flow(
        client,
        tenant,
        "parent",
        [
            {
                "id": "sub",
                "type": "flow_start",
                "option": {"flow_id": child["id"], "variables": {"greeting": "hi"}},
            },
            {"id": "say", "type": "conversation_send", "option": {"text": "parent ${sub.answer}"}},
        ],
    )
    runs = await run_flow(client, temporal_env, tenant, parent, runs=2)
    assert {r["status"] for r in runs} == {"ended"}
    by_parent = {r["parent_id"] is None: r for r in runs}
    for name, row in (("flow_start", by_parent[True]), ("sub_flow", by_parent[False])):
        handle = temporal_env.client.get_workflow_handle(row["workflow_id"])
        histories[f"activeflow_versioned_{name}"] = await handle.fetch_history()

    replayer = Replayer(workflows=WORKFLOWS)
    for history in histories.values():
        await replayer.replay_workflow(history)
    if os.environ.get("HUB_RECORD_HISTORIES") == "1":
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))
