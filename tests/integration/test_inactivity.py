"""Inactivity close (issue 15, item 2) with a compressed timeout: quiet conversations close once
(reason `inactivity`), a conversation that spoke stays open, concurrent sweeps never close twice,
and a worker killed across the due time delays the close without losing or repeating it."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import timedelta

import msgspec
import pytest

from hub import lifecycle
from hub.repo import now
from hub.tables import Conversation, Customer, Event
from tests.helpers import make_tenant, open_conversation, wait_for
from tests.integration.test_worker_crash import worker_process
from workflows.inactivity import InactivitySweepWorkflow, InactivitySweepWorkflowInput

QUIET_S = 8


async def closes_of(conversation_id) -> list[dict]:
    rows = await Event.select(Event.data).where(
        Event.conversation_id == conversation_id, Event.type == "conversation_updated"
    )
    return [d for d in (msgspec.json.decode(r["data"]) for r in rows) if d["status"] == "closed"]


async def _quiet_for(conversation_id, seconds: float) -> None:
    """Moves the conversation's last message into the past (as if it had been quiet that long)."""
    past = now() - timedelta(seconds=seconds)
    await Conversation.update({Conversation.tm_last_message: past}).where(Conversation.id == conversation_id)


async def test_quiet_conversations_close_once_and_talking_ones_stay_open(client):
    tenant = await make_tenant()
    await Customer.update({Customer.inactivity_close_s: 60}).where(Customer.id == tenant.customer_id)
    quiet = await open_conversation(client, tenant)
    talking = await open_conversation(client, tenant)
    await _quiet_for(quiet, 120)
    await _quiet_for(talking, 30)
    # Another customer without the setting: nothing of it closes, however quiet.
    other = await make_tenant()
    untouched = await open_conversation(client, other)
    await _quiet_for(untouched, 10_000)

    # Two sweeps at once (a retried round racing a new one) close each conversation once.
    first, second = await asyncio.gather(lifecycle.close_inactive(), lifecycle.close_inactive())
    closed_ids = [c.conversation["id"] for c in first + second]
    assert closed_ids.count(quiet) == 1 and talking not in closed_ids and untouched not in closed_ids
    shown = (await client.get(f"/v1.0/conversations/{quiet}", headers=tenant.admin.headers)).json()
    assert (shown["status"], shown["closed_reason"]) == ("closed", "inactivity") and shown["tm_closed"]
    assert len(await closes_of(quiet)) == 1
    again = await lifecycle.close_inactive()
    assert quiet not in [c.conversation["id"] for c in again] and len(await closes_of(quiet)) == 1
    for conversation_id in (talking, untouched):
        row = await Conversation.select(Conversation.status).where(Conversation.id == conversation_id).first()
        assert row["status"] == "open"


async def test_customer_setting_is_validated_and_shown(client):
    tenant = await make_tenant()
    for bad in (-1, 1.5, "60", 10**9):
        response = await client.put(
            "/v1.0/customer", json={"inactivity_close_s": bad}, headers=tenant.admin.headers
        )
        assert response.status_code == 400, (bad, response.text)
    response = await client.put(
        "/v1.0/customer", json={"inactivity_close_s": 3600}, headers=tenant.agent.headers
    )
    assert response.status_code == 403
    response = await client.put(
        "/v1.0/customer", json={"inactivity_close_s": 3600}, headers=tenant.admin.headers
    )
    assert response.status_code == 200 and response.json()["inactivity_close_s"] == 3600
    assert (await client.get("/v1.0/customer", headers=tenant.agent.headers)).json()[
        "inactivity_close_s"
    ] == 3600


@pytest.mark.slow
@pytest.mark.usefixtures("dispatchers")  # see test_worker_crash.pytestmark
async def test_a_worker_killed_across_the_due_time_delays_the_close_once(client, settings, temporal_env):
    tenant = await make_tenant()
    await Customer.update({Customer.inactivity_close_s: QUIET_S}).where(Customer.id == tenant.customer_id)
    conversation_id = await open_conversation(client, tenant)
    queue = f"sweep-{uuid.uuid4().hex[:8]}"
    sweep = await temporal_env.client.start_workflow(
        InactivitySweepWorkflow.run,
        InactivitySweepWorkflowInput(sweep_s=0.5),
        id=f"inactivity-sweep-test-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
    )
    first = worker_process(settings, queue)
    try:
        await wait_for(lambda: _ran_a_round(sweep), within=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # Due meanwhile, with no worker: it stays open (delayed, not lost).
        row = (
            await Conversation.select(Conversation.tm_last_message)
            .where(Conversation.id == conversation_id)
            .first()
        )
        await asyncio.sleep(
            max(0.0, (row["tm_last_message"] + timedelta(seconds=QUIET_S + 1.5) - now()).total_seconds())
        )
        row = await Conversation.select(Conversation.status).where(Conversation.id == conversation_id).first()
        assert row["status"] == "open"
        second = worker_process(settings, queue)
        try:
            await wait_for(lambda: closes_of(conversation_id), within=60)
            await asyncio.sleep(2)  # a few more rounds
            closes = await closes_of(conversation_id)
            assert len(closes) == 1 and closes[0]["closed_reason"] == "inactivity"
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()
        await sweep.terminate("test over")


async def _ran_a_round(handle) -> bool:
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_completed_event_attributes"):
            return True
    return False
