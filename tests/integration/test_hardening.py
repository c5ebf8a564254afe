"""Edge cases found in review: forgeable empty credentials, duplicate sends, bad resume points,
idempotency keys across conversations, stops racing the end of a run."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from activities import messages as message_activities
from hub import accounts, activeflows, outbound
from hub.tables import Activeflow, Conversation, Message
from tests.helpers import (
    line_event,
    make_line_account,
    make_tenant,
    open_conversation,
    signed_line,
    signed_sms,
    sms_params,
)


async def test_accounts_without_credentials_accept_no_signed_posts(client):
    tenant = await make_tenant()
    bare_sms = await accounts.create_account(tenant.customer_id, {"type": "sms", "number": "+15550002000"})
    path, body, headers = signed_sms(bare_sms["id"], "", sms_params(to="+15550002000"))
    assert (await client.post(path, content=body, headers=headers)).status_code == 401
    bare_line = await accounts.create_account(tenant.customer_id, {"type": "line"})
    path, body, headers = signed_line(bare_line["id"], "", [line_event("message", "Uforger", "hi")])
    assert (await client.post(path, content=body, headers=headers)).status_code == 401
    assert await Message.count().where(Message.customer_id == tenant.customer_id) == 0


async def test_line_message_without_any_id_is_400(client):
    tenant = await make_tenant()
    account, secret = await make_line_account(tenant.customer_id)
    event = line_event("message", "Unoid", message={"type": "text", "text": "hi"})
    event["webhookEventId"] = ""
    path, body, headers = signed_line(account["id"], secret, [event])
    assert (await client.post(path, content=body, headers=headers)).status_code == 400
    assert await Message.count().where(Message.account_id == account["id"]) == 0


async def test_recovery_leaves_flow_messages_to_their_flow(client):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    by_api, _ = await outbound.create_outgoing(tenant.customer_id, conversation_id, "api", [])
    by_flow, _ = await outbound.create_outgoing(
        tenant.customer_id, conversation_id, "flow", [], activeflow_id=uuid.uuid4()
    )
    stuck = {m["id"] for m in await outbound.stuck_outgoing(0, limit=10_000)}
    assert by_api["id"] in stuck and by_flow["id"] not in stuck


async def test_idempotency_key_is_bound_to_its_conversation(client):
    tenant = await make_tenant()
    first_conversation = await open_conversation(client, tenant)
    path, body, headers = signed_sms(
        tenant.account["id"], tenant.auth_token, sms_params(sender="+14155550111")
    )
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    second_conversation = (
        await Conversation.select(Conversation.id)
        .where(Conversation.customer_id == tenant.customer_id, Conversation.id != first_conversation)
        .first()
    )["id"]
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = await client.post(
        f"/v1.0/conversations/{first_conversation}/messages",
        json={"text": "a"},
        headers=tenant.admin.headers | key,
    )
    assert first.status_code == 200
    other = await client.post(
        f"/v1.0/conversations/{second_conversation}/messages",
        json={"text": "a"},
        headers=tenant.admin.headers | key,
    )
    assert other.status_code == 409
    stranger = await make_tenant()
    foreign = await client.post(
        f"/v1.0/conversations/{first_conversation}/messages",
        json={"text": "a"},
        headers=stranger.admin.headers | key,
    )
    assert foreign.status_code == 404


async def test_last_event_id_out_of_range_is_400(client):
    tenant = await make_tenant()
    for value in ("99999999999999999999", "2147483648", "-1", "abc"):
        response = await client.get("/v1.0/events", headers=tenant.admin.headers | {"Last-Event-ID": value})
        assert response.status_code == 400, (value, response.text)


async def test_activeflows_of_another_customers_conversation_is_404(client):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    stranger = await make_tenant()
    response = await client.get(
        f"/v1.0/activeflows?conversation_id={conversation_id}", headers=stranger.admin.headers
    )
    assert response.status_code == 404


async def test_a_stop_is_not_overwritten_by_the_end_of_the_run(client):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    row = Activeflow(
        id=uuid.uuid4(),
        customer_id=tenant.customer_id,
        flow_id=uuid.uuid4(),
        conversation_id=conversation_id,
        account_id=tenant.account["id"],
        workflow_id=f"activeflow-{uuid.uuid4()}",
        status="running",
    )
    await Activeflow.insert(row)
    await activeflows.mark_stopped(tenant.customer_id, row.id)
    await activeflows.finish(row.id, "ended", ["a", "b"], {"x": "1"}, "b")
    final = await Activeflow.select().where(Activeflow.id == row.id).first()
    assert final["status"] == "stopped"
    assert msgspec.json.decode(final["executed_actions"]) == ["a", "b"]
    await activeflows.finish(row.id, "ended", ["a"], {}, "a")  # a run that was not stopped
    other = Activeflow(**{**row.to_dict(), "id": uuid.uuid4(), "workflow_id": f"activeflow-{uuid.uuid4()}"})
    other.status = "running"
    await Activeflow.insert(other)
    await activeflows.finish(other.id, "ended", ["a"], {}, "a")
    assert (await Activeflow.select().where(Activeflow.id == other.id).first())["status"] == "ended"


async def test_outcome_recording_survives_a_brief_database_failure(monkeypatch):
    calls = []

    async def flaky_finish(*args, **kwargs):
        calls.append(args)
        if len(calls) < 3:
            raise ConnectionError("database briefly gone")
        return True

    monkeypatch.setattr(message_activities.outbound, "finish_delivery", flaky_finish)
    assert await message_activities.record_outcome(uuid.uuid4(), "done", "SM1") is True
    assert len(calls) == 3

    async def always_down(*args, **kwargs):
        raise ConnectionError("down")

    monkeypatch.setattr(message_activities, "RECORD_DELAYS_S", (0.01, 0.01))
    monkeypatch.setattr(message_activities.outbound, "finish_delivery", always_down)
    with pytest.raises(ConnectionError):
        await message_activities.record_outcome(uuid.uuid4(), "done", "SM2")
