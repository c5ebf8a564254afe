"""Determinism guard: recorded workflow histories must replay against the current workflow code.

Histories in histories/ were recorded from real runs; a change to a workflow that would break
running executions fails here. Set HUB_RECORD_HISTORIES=1 to (re)record them on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from api.worker import WORKFLOWS
from hub.tables import Activeflow, FlowVersion, Message
from tests.helpers import make_tenant, signed_sms, sms_params, wait_for

HISTORIES = Path(__file__).parent / "histories"

REPRESENTATIVE_FLOWS = {
    "menu_loop_sleep": [
        {
            "id": "set",
            "type": "variable_set",
            "option": {"name": "who", "value": "${conversation.peer.target}"},
        },
        {
            "id": "menu",
            "type": "branch",
            "option": {"variable": "message.text", "targets": {"loop": "say"}, "default_target_id": "bye"},
        },
        {"id": "say", "type": "conversation_send", "option": {"text": "round for ${who}"}},
        {"id": "nap", "type": "sleep", "option": {"duration_ms": 50}},
        {"id": "again", "type": "goto", "option": {"target_id": "say", "loop_count": 1}},
        {"id": "bye", "type": "conversation_send", "option": {"text": "bye"}},
        {"id": "end", "type": "stop", "option": {}},
    ],
    "action_cap": [
        {"id": "a", "type": "variable_set", "option": {"name": "x", "value": "1"}},
        {"id": "loop", "type": "goto", "option": {"target_id": "a", "loop_count": 1000}},
    ],
    # Saved fine, then broken in the database: the run fails in flow_load, with the reason.
    "invalid_stored_action": [{"id": "nap", "type": "sleep", "option": {"duration_ms": 5}}],
}
BROKEN_IN_DB = {"invalid_stored_action": [{"id": "nap", "type": "sleep", "option": {"duration_ms": "x"}}]}


def stored_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded():
    names = {p.stem for p in stored_histories()}
    # Runs started with the whole flow in their input (before flow versions) must still finish.
    assert {"activeflow_menu_loop_sleep", "activeflow_action_cap", "send_retried"} <= names
    assert {f"activeflow_versioned_{name}" for name in REPRESENTATIVE_FLOWS} <= names


@pytest.mark.parametrize("path", stored_histories(), ids=lambda p: p.stem)
async def test_stored_history_replays(path: Path):
    history = WorkflowHistory.from_json(path.stem, await asyncio.to_thread(path.read_text))
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)


async def send_history(client, temporal_env, tenant, conversation_id) -> WorkflowHistory:
    """An API send whose first provider attempt fails (500) and the retry succeeds."""
    response = await client.post(
        f"/v1.0/conversations/{conversation_id}/messages",
        json={"text": "agent"},
        headers=tenant.admin.headers,
    )
    message_id = response.json()["id"]

    async def settled():
        row = await Message.select(Message.status).where(Message.id == uuid.UUID(message_id)).first()
        return row["status"] != "progressing"

    await wait_for(settled)
    return await temporal_env.client.get_workflow_handle(f"send-{message_id}").fetch_history()


@pytest.mark.usefixtures("worker")
async def test_fresh_histories_replay(client, temporal_env, fake_sms):
    """Runs the representative flows now, then replays what the server recorded."""
    histories: dict[str, WorkflowHistory] = {}
    for name, actions in REPRESENTATIVE_FLOWS.items():
        tenant = await make_tenant()
        flow = await client.post(
            "/v1.0/flows", json={"name": name, "actions": actions}, headers=tenant.admin.headers
        )
        await client.put(
            f"/v1.0/accounts/{tenant.account['id']}",
            json={"message_flow_id": flow.json()["id"]},
            headers=tenant.admin.headers,
        )
        if name in BROKEN_IN_DB:
            await FlowVersion.update({FlowVersion.actions: json.dumps(BROKEN_IN_DB[name])}).where(
                FlowVersion.flow_id == uuid.UUID(flow.json()["id"])
            )
        path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(body="loop"))
        assert (await client.post(path, content=body, headers=headers)).status_code == 200

        async def finished(customer_id=tenant.customer_id):
            row = await Activeflow.select().where(Activeflow.customer_id == customer_id).first()
            return row if row and row["status"] != "running" else None

        run = await wait_for(finished)
        handle = temporal_env.client.get_workflow_handle(run["workflow_id"])
        histories[f"activeflow_versioned_{name}"] = await handle.fetch_history()
        if name == "menu_loop_sleep":
            fake_sms.control({"fail_next": 1, "fail_status": 500})
            histories["send_retried"] = await send_history(
                client, temporal_env, tenant, run["conversation_id"]
            )

    replayer = Replayer(workflows=WORKFLOWS)
    for history in histories.values():
        await replayer.replay_workflow(history)
    if os.environ.get("HUB_RECORD_HISTORIES") == "1":
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))


# --- dialogues (wait_for_reply) and dry runs ----------------------------------------------------

DIALOGUE_FLOW = [
    {"id": "ask", "type": "conversation_send", "option": {"text": "Yes or no?"}},
    {"id": "answer", "type": "wait_for_reply", "option": {"timeout_ms": 60_000, "into": "answer"}},
    {"id": "said", "type": "conversation_send", "option": {"text": "you said ${answer.text}"}},
    {"id": "again", "type": "wait_for_reply", "option": {"timeout_ms": 200, "into": "again"}},
    {"id": "end", "type": "conversation_send", "option": {"text": "timeout: ${again.timeout}"}},
]
DIALOGUE_HISTORIES = ("activeflow_dialogue_answered_then_timeout", "activeflow_dry_run")


def test_dialogue_histories_are_recorded():
    assert set(DIALOGUE_HISTORIES) <= {p.stem for p in stored_histories()}


@pytest.mark.usefixtures("worker")
async def test_fresh_dialogue_histories_replay(client, temporal_env):
    """A run that waits, is answered (the reply signal), then times out; and a dry run."""
    tenant = await make_tenant()
    flow = await client.post(
        "/v1.0/flows", json={"name": "dialogue", "actions": DIALOGUE_FLOW}, headers=tenant.admin.headers
    )
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )

    async def send(text):
        path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(body=text))
        assert (await client.post(path, content=body, headers=headers)).status_code == 200

    await send("start")

    async def in_dialogue():
        row = await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id).first()
        return row if row and row["in_dialogue"] else None

    run = await wait_for(in_dialogue)
    await send("yes")

    async def finished():
        row = await Activeflow.select().where(Activeflow.id == run["id"]).first()
        return row if row["status"] != "running" else None

    done = await wait_for(finished)
    assert done["status"] == "ended"
    histories = {
        DIALOGUE_HISTORIES[0]: await temporal_env.client.get_workflow_handle(
            run["workflow_id"]
        ).fetch_history()
    }
    dry = await client.post(
        f"/v1.0/flows/{flow.json()['id']}/test",
        json={"message": {"text": "start"}, "replies": [{"text": "no"}]},
        headers=tenant.admin.headers,
    )
    assert dry.status_code == 200, dry.text
    dry_id = dry.json()["variables"]["activeflow.id"]
    histories[DIALOGUE_HISTORIES[1]] = await temporal_env.client.get_workflow_handle(
        f"dryrun-{dry_id}"
    ).fetch_history()
    replayer = Replayer(workflows=WORKFLOWS)
    for history in histories.values():
        await replayer.replay_workflow(history)
    if os.environ.get("HUB_RECORD_HISTORIES") == "1":
        for name, history in histories.items():
            (HISTORIES / f"{name}.json").write_text(json.dumps(json.loads(history.to_json()), indent=1))
