"""Dry runs (POST /v1.0/flows/{id}/test, POST /v1.0/flows/test, `hub flows test`): the flow runs
in a sandboxed activeflow; sends are captured; no row and no provider call come of it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from api import temporal as hub_temporal
from hub.errors import Unavailable
from hub.tables import TABLES
from tests.helpers import make_tenant
from tests.integration.test_dialogue import SURVEY
from tests.integration.test_flows import REPO, setup_flow

pytestmark = pytest.mark.usefixtures("worker")

WITH_EVERY_EFFECT = [
    {"id": "greet", "type": "conversation_send", "option": {"text": "hi ${message.text}"}},
    {
        "id": "hook",
        "type": "webhook_send",
        "option": {"url": "http://127.0.0.1:9/never", "body": {"t": "${message.text}"}},
    },
    {"id": "nap", "type": "sleep", "option": {"duration_ms": 3_600_000}},
    {"id": "w", "type": "wait_for_reply", "option": {"timeout_ms": 3_600_000}},
    {"id": "close", "type": "conversation_close", "option": {"reason": "done"}},
]


async def row_counts() -> dict[str, int]:
    return {table._meta.tablename: await table.count() for table in TABLES}


async def test_a_dry_run_answers_path_captures_and_variables_and_stores_nothing(client, fake_sms):
    tenant, flow = await setup_flow(client, SURVEY)
    before = await row_counts()
    response = await client.post(
        f"/v1.0/flows/{flow['id']}/test",
        json={"message": {"text": "survey"}, "replies": [{"text": "L", "channel": "sms"}]},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ended"
    assert body["executed_actions"] == ["ask_size", "size", "ask_colour", "colour", "summary"]
    assert [c["detail"]["text"] for c in body["captured"]] == [
        "Size? S, M or L",
        "Colour?",
        "You chose L in  (timed out: true)",
    ]
    assert [c["action_id"] for c in body["captured"]] == ["ask_size", "ask_colour", "summary"]
    variables = body["variables"]
    assert (variables["size.text"], variables["size.timeout"], variables["colour.timeout"]) == (
        "L",
        "false",
        "true",
    )
    assert variables["message.text"] == "survey"
    # Nothing stored anywhere (no message, conversation, event, run...), no provider called.
    assert await row_counts() == before
    assert fake_sms.received == []


async def test_every_side_effect_is_captured_and_waits_do_not_wait(client, fake_sms):
    tenant = await make_tenant()
    before = await row_counts()
    response = await client.post(
        "/v1.0/flows/test",
        json={"actions": WITH_EVERY_EFFECT, "message": {"text": "yo", "channel": "line"}},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ended"
    assert [(c["action_id"], c["type"]) for c in body["captured"]] == [
        ("greet", "message"),
        ("hook", "http"),
        ("nap", "sleep"),
        ("close", "conversation_close"),
    ]
    assert body["captured"][1]["detail"]["body"] == {"t": "yo"}
    assert body["variables"]["conversation.status"] == "closed"
    assert body["variables"]["reply.timeout"] == "true"
    assert await row_counts() == before
    assert fake_sms.received == []


async def test_a_dry_run_validates_like_a_save(client):
    tenant = await make_tenant()
    bad = [{"id": "w", "type": "wait_for_reply", "option": {"timeout_ms": -1}}]
    response = await client.post("/v1.0/flows/test", json={"actions": bad}, headers=tenant.admin.headers)
    assert response.status_code == 400 and "'w'" in response.text
    unknown = await client.post(
        "/v1.0/flows/test", json={"message": {"channel": "fax"}}, headers=tenant.admin.headers
    )
    assert unknown.status_code == 400 and "channel" in unknown.text
    other = await make_tenant()
    _, flow = await setup_flow(client, SURVEY, tenant=other)
    missing = await client.post(f"/v1.0/flows/{flow['id']}/test", json={}, headers=tenant.admin.headers)
    assert missing.status_code == 404
    agent = await client.post(f"/v1.0/flows/{flow['id']}/test", json={}, headers=other.agent.headers)
    assert agent.status_code == 403


async def test_the_cli_dry_runs_a_flow_document(client, settings, tmp_path: Path):
    tenant = await make_tenant()
    document = tmp_path / "survey.json"
    document.write_text(json.dumps({"name": "survey", "actions": SURVEY}))
    token = tenant.admin.headers["Authorization"].split()[-1]
    command = ["flows", "test", str(document), "--text", "survey", "--reply", "M", "--reply", "blue"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    # In a thread: the API under test serves from this event loop.
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", *command, "--url", str(client.base_url), "--token", token],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["captured"][-1]["detail"]["text"] == "You chose M in blue (timed out: false)"
    # Without --token: one is minted for the customer's admin from the database.
    minted = {**env, "HUB_DATABASE_URL": settings.database_url, "HUB_JWT_SECRET": settings.jwt_secret}
    again = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "api.cli",
            *command,
            "--url",
            str(client.base_url),
            "--customer",
            str(tenant.customer_id),
        ],
        cwd=REPO,
        env=minted,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["executed_actions"] == answer["executed_actions"]


def readme_survey() -> dict:
    text = (REPO / "README.md").read_text()
    start = text.index("```json", text.index("A three-step survey")) + len("```json")
    return json.loads(text[start : text.index("```", start)])


async def test_the_readme_survey_dry_runs_as_documented(client):
    tenant = await make_tenant()
    body = {"actions": readme_survey()["actions"], "message": {"text": "survey"}}
    body["replies"] = [{"text": "M"}, {"text": "blue"}]
    answer = (await client.post("/v1.0/flows/test", json=body, headers=tenant.admin.headers)).json()
    assert answer["executed_actions"] == [
        "ask_size",
        "size",
        "no_size",
        "ask_colour",
        "colour",
        "ask_note",
        "note",
        "thanks",
        "end",
    ]
    assert answer["captured"][-1]["detail"] == {"text": "Thanks: M in blue. "}
    assert (answer["variables"]["size.timeout"], answer["variables"]["note.timeout"]) == ("false", "true")
    silent = (
        await client.post("/v1.0/flows/test", json={**body, "replies": []}, headers=tenant.admin.headers)
    ).json()
    assert [c["detail"]["text"] for c in silent["captured"]] == ["Size? S, M or L", "No answer, bye"]


async def test_a_dry_run_without_a_polling_worker_is_a_503_at_once(client, settings, temporal_env):
    nobody = dataclasses.replace(settings, temporal_task_queue=f"nobody-{uuid.uuid4().hex[:8]}")
    variables = {"activeflow.id": str(uuid.uuid4())}
    with pytest.raises(Unavailable, match="no worker"):
        await hub_temporal.dry_run(temporal_env.client, nobody, uuid.uuid4(), "", [], variables, [])


async def test_an_endless_loop_of_sends_answers_its_first_captures(client):
    tenant = await make_tenant()
    loop = [{"id": "say", "type": "conversation_send", "option": {"text": "x" * 5000}, "next_id": "say"}]
    response = await client.post("/v1.0/flows/test", json={"actions": loop}, headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "failed" and "safety cap" in body["reason"]
    assert (len(body["captured"]), body["captured_dropped"]) == (100, 900)


async def test_handoff_actions_and_sub_flows_are_captured_not_done(client, fake_sms):
    tenant = await make_tenant()
    _, child = await setup_flow(client, [{"id": "s", "type": "stop", "option": {}}], tenant=tenant)
    actions = [
        {"id": "tag", "type": "conversation_tag", "option": {"add": ["VIP", "new"], "remove": ["new"]}},
        {"id": "give", "type": "conversation_assign", "option": {"agent_id": str(tenant.agent.id)}},
        {"id": "back", "type": "conversation_unassign", "option": {}},
        {
            "id": "sub",
            "type": "flow_start",
            "option": {"flow_id": child["id"], "variables": {"x": "${message.text}"}},
        },
    ]
    before = await row_counts()
    response = await client.post(
        "/v1.0/flows/test",
        json={"actions": actions, "message": {"text": "hey"}},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ended"
    assert [(c["action_id"], c["type"]) for c in body["captured"]] == [
        ("tag", "conversation_tag"),
        ("give", "conversation_assign"),
        ("back", "conversation_unassign"),
        ("sub", "flow_start"),
    ]
    assert body["captured"][1]["detail"] == {"agent_id": str(tenant.agent.id)}
    assert body["captured"][3]["detail"] == {"flow_id": child["id"], "variables": {"x": "hey"}}
    variables = body["variables"]
    assert variables["conversation.tags"] == "vip"
    assert variables["conversation.owner_id"] == str(uuid.UUID(int=0))
    assert variables["sub.activeflow.status"] == "captured"
    assert await row_counts() == before
    assert fake_sms.received == []
    # Checked like a save: another customer's agent is refused before anything runs.
    other = await make_tenant()
    foreign = [{"id": "give", "type": "conversation_assign", "option": {"agent_id": str(other.agent.id)}}]
    refused = await client.post("/v1.0/flows/test", json={"actions": foreign}, headers=tenant.admin.headers)
    assert refused.status_code == 400 and "'give'" in refused.text
