"""Runs of flows that go wrong: recovery with a run Temporal refuses, flow versions under edits,
small content-free workflow inputs, malformed stored actions, data the database refuses."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import timedelta

import msgspec
import pytest
from temporalio.service import RPCError, RPCStatusCode

from api import temporal as hub_temporal
from api.worker import recover_activeflows, recovery_round
from hub import outbound
from hub.repo import now
from hub.tables import Activeflow, FlowVersion, Message
from tests.helpers import make_tenant, open_conversation, wait_for
from tests.integration.test_flows import finished_run, inbound, outgoing_texts, reply, runs_of, setup_flow

pytestmark = pytest.mark.usefixtures("worker")


async def unstarted_run(client, monkeypatch, text: str):
    """A tenant whose inbound message committed its activeflow, but whose start never happened."""
    tenant, _ = await setup_flow(client, [reply(text)])

    async def temporal_down(*args, **kwargs):
        raise RPCError("injected: Temporal unreachable", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", temporal_down)
    response, _ = await inbound(client, tenant)
    monkeypatch.undo()
    assert response.status_code == 503
    [row] = await runs_of(tenant)
    assert row["started"] is False
    return tenant, row


async def poisoned_run(tenant, age: timedelta) -> uuid.UUID:
    """A run whose workflow start Temporal always refuses (an empty workflow id), oldest of all,
    so it comes first in every recovery round."""
    [good] = await runs_of(tenant)
    row_id = uuid.uuid4()
    await Activeflow.insert(
        Activeflow(
            id=row_id,
            customer_id=tenant.customer_id,
            flow_id=good["flow_id"],
            conversation_id=good["conversation_id"],
            account_id=good["account_id"],
            workflow_id="",
            flow_version=1,
            status="running",
            started=False,
            tm_create=now() - age,
        )
    )
    return row_id


async def age_rows(*tenants, by: timedelta) -> None:
    for tenant in tenants:
        await Activeflow.update({Activeflow.tm_create: now() - by}).where(
            Activeflow.customer_id == tenant.customer_id
        )


# --- item 10: recovery isolates each row --------------------------------------------------------


async def test_a_run_temporal_refuses_holds_up_no_other_recovery(client, settings, temporal_env, monkeypatch):
    tenants = [await unstarted_run(client, monkeypatch, f"recovered {i}") for i in range(3)]
    await age_rows(*(t for t, _ in tenants), by=timedelta(hours=1))
    poisoned = await poisoned_run(tenants[0][0], age=timedelta(hours=2))
    # A lost API send of yet another tenant.
    other = await make_tenant()
    conversation_id = await open_conversation(client, other)
    message, _ = await outbound.create_outgoing(other.customer_id, conversation_id, "lost send", [])
    await Message.update({Message.tm_create: now() - timedelta(hours=1)}).where(Message.id == message["id"])

    limited = dataclasses.replace(settings, recovery_max_start_attempts=3)
    await recovery_round(temporal_env.client, limited)

    for tenant, _ in tenants:
        [done] = [r for r in await finished_run(tenant, count=1) if r["id"] != poisoned]
        assert done["status"] == "ended"
    assert [await outgoing_texts(t) for t, _ in tenants] == [[f"recovered {i}"] for i in range(3)]

    async def delivered():
        row = await Message.select(Message.status).where(Message.id == message["id"]).first()
        return row["status"] == "done"

    await wait_for(delivered)
    row = await Activeflow.select().where(Activeflow.id == poisoned).first()
    assert (row["status"], row["start_attempts"]) == ("running", 1)

    for _ in range(2):
        await recover_activeflows(temporal_env.client, limited, older_than_s=0)
    row = await Activeflow.select().where(Activeflow.id == poisoned).first()
    assert (row["status"], row["start_attempts"]) == ("failed", 3)
    assert "could not be started (3 attempts)" in row["reason"] and row["tm_end"] is not None
    # A failed run is left alone from now on.
    await recover_activeflows(temporal_env.client, limited, older_than_s=0)
    row = await Activeflow.select().where(Activeflow.id == poisoned).first()
    assert row["start_attempts"] == 3


# --- item 11: small inputs, flow versions ----------------------------------------------------------


async def test_a_run_keeps_its_flow_version_while_the_flow_changes(client, temporal_env):
    sleepy = [
        reply("v1 before", "before"),
        {"id": "nap", "type": "sleep", "option": {"duration_ms": 1500}},
        reply("v1 after", "after"),
    ]
    tenant, flow = await setup_flow(client, sleepy)
    assert flow["version"] == 1
    await inbound(client, tenant, text="first")
    await wait_for(lambda: outgoing_texts(tenant))
    edited = await client.put(
        f"/v1.0/flows/{flow['id']}", json={"actions": [reply("v2")]}, headers=tenant.admin.headers
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    renamed = await client.put(f"/v1.0/flows/{flow['id']}", json={"name": "x"}, headers=tenant.admin.headers)
    assert renamed.json()["version"] == 2  # only the actions make versions

    [run] = await finished_run(tenant)
    assert run["status"] == "ended", run["reason"]
    assert await outgoing_texts(tenant) == ["v1 before", "v1 after"]
    shown = await client.get(f"/v1.0/activeflows/{run['id']}", headers=tenant.admin.headers)
    assert shown.json()["flow_version"] == 1

    await inbound(client, tenant, text="second", sender="+14155550002")
    runs = await finished_run(tenant, count=2)
    assert sorted(r["flow_version"] for r in runs) == [1, 2]
    assert await outgoing_texts(tenant) == ["v1 before", "v1 after", "v2"]
    versions = await FlowVersion.select(FlowVersion.version, FlowVersion.actions).where(
        FlowVersion.flow_id == uuid.UUID(flow["id"])
    )
    assert sorted(v["version"] for v in versions) == [1, 2]

    # The workflow input names the run; the flow's texts and the peer's number are not in it.
    history = await temporal_env.client.get_workflow_handle(run["workflow_id"]).fetch_history()
    [payload] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    started_with = json.loads(payload.data)
    assert started_with["activeflow_id"] == str(run["id"]) and started_with["flow_version"] == 1
    assert started_with["actions"] == [] and started_with["variables"] == {}
    for secret in (b"v1 before", b"+14155551234", b"first"):
        assert secret not in payload.data
    assert len(payload.data) < 1024


async def test_flows_over_the_size_cap_are_refused(client):
    tenant = await make_tenant()
    actions = [reply("x" * 4000, f"a{i}") for i in range(200)]
    response = await client.post(
        "/v1.0/flows", json={"name": "huge", "actions": actions}, headers=tenant.admin.headers
    )
    assert response.status_code == 400
    assert "KiB" in response.json()["error"]["message"]


# --- item 12: malformed stored actions fail the run ----------------------------------------------


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ([{"id": "nap", "type": "sleep", "option": {"duration_ms": "long"}}], "'nap'"),
        ([{"id": "warp", "type": "teleport", "option": {}}], "'warp'"),
        ([{"id": "jump", "type": "goto", "option": {"target_id": "nowhere", "loop_count": 1}}], "'jump'"),
        ("not json at all", "not JSON"),
    ],
)
async def test_a_malformed_stored_action_fails_the_run_with_the_reason(client, bad, named):
    tenant, flow = await setup_flow(client, [reply("fine")])
    raw = bad if isinstance(bad, str) else msgspec.json.encode(bad).decode()
    await FlowVersion.update({FlowVersion.actions: raw}).where(FlowVersion.flow_id == uuid.UUID(flow["id"]))
    await inbound(client, tenant)
    [run] = await finished_run(tenant, within=15)
    assert run["status"] == "failed"
    assert run["reason"].startswith("the flow cannot run") and named in run["reason"]
    assert await outgoing_texts(tenant) == []


async def test_a_run_from_before_flow_versions_uses_its_own_actions(client, settings, temporal_env):
    """Rows written before migration 0008 (flow_version 0) carry their actions; bad ones fail."""
    tenant = await make_tenant()
    created = await client.post(
        "/v1.0/flows", json={"name": "old", "actions": [reply("from the flow")]}, headers=tenant.admin.headers
    )
    flow = created.json()
    conversation_id = await open_conversation(client, tenant)
    for actions in ([reply("from the row")], [{"id": "s", "type": "stop", "option": {"x": 1}}]):
        row_id = uuid.uuid4()
        await Activeflow.insert(
            Activeflow(
                id=row_id,
                customer_id=tenant.customer_id,
                flow_id=uuid.UUID(flow["id"]),
                conversation_id=conversation_id,
                account_id=uuid.UUID(str(tenant.account["id"])),
                workflow_id=f"activeflow-{row_id}",
                flow_version=0,
                actions=msgspec.json.encode(actions).decode(),
                status="running",
                started=False,
            )
        )
        row = await Activeflow.select().where(Activeflow.id == row_id).first()
        await hub_temporal.start_activeflow(temporal_env.client, settings, row)

        async def finished(row_id=row_id):
            row = await Activeflow.select().where(Activeflow.id == row_id).first()
            return row if row["status"] != "running" else None

        done = await wait_for(finished, within=15)
        if actions[0]["type"] == "conversation_send":
            assert done["status"] == "ended"
        else:
            assert done["status"] == "failed" and "'s'" in done["reason"]
    assert await outgoing_texts(tenant) == ["from the row"]


# --- item 14: data errors end the action -------------------------------------------------------------


async def test_a_send_the_database_refuses_ends_the_run_at_once(client):
    tenant, flow = await setup_flow(client, [reply("fine")])
    bad = [reply("nul \x00 inside", "nul"), reply("never", "after")]
    await FlowVersion.update({FlowVersion.actions: msgspec.json.encode(bad).decode()}).where(
        FlowVersion.flow_id == uuid.UUID(flow["id"])
    )
    await inbound(client, tenant)
    [run] = await finished_run(tenant, within=15)
    assert run["status"] == "failed"
    assert run["reason"].startswith("action nul:") and "refused" in run["reason"]
    assert await outgoing_texts(tenant) == []
