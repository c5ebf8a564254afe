"""Flows that hold a dialogue (wait_for_reply) end to end: PostgreSQL, a Temporal dev server,
the fake SMS provider. Routing into the run's inbox, assignment, recovery, flow edits."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from api import temporal as hub_temporal
from api.worker import recover_dialogue_replies
from hub.tables import Activeflow, DialogueMessage, Message
from tests.helpers import wait_for
from tests.integration.test_flows import finished_run, inbound, outgoing_texts, reply, runs_of, setup_flow

pytestmark = pytest.mark.usefixtures("worker")


def wait(action_id: str, into: str, timeout_ms: int = 60_000) -> dict:
    return {"id": action_id, "type": "wait_for_reply", "option": {"timeout_ms": timeout_ms, "into": into}}


SURVEY = [
    reply("Size? S, M or L", "ask_size"),
    wait("size", "size"),
    reply("Colour?", "ask_colour"),
    wait("colour", "colour"),
    reply("You chose ${size.text} in ${colour.text} (timed out: ${colour.timeout})", "summary"),
]


async def waiting_run(client, tenant, waits: int = 1) -> dict:
    """The tenant's single run once it is in dialogue and waiting (its `waits`-th wait)."""

    async def check():
        rows = await runs_of(tenant)
        if len(rows) != 1 or not rows[0]["in_dialogue"]:
            return None
        shown = await client.get(f"/v1.0/activeflows/{rows[0]['id']}", headers=tenant.admin.headers)
        body = shown.json()
        return (
            body
            if body["waiting"]
            and body["executed_actions"].count("size") + body["executed_actions"].count("colour") >= waits
            else None
        )

    return await wait_for(check)


async def inbox_rows(run_id) -> list[dict]:
    return (
        await DialogueMessage.select()
        .where(DialogueMessage.activeflow_id == run_id)
        .order_by(DialogueMessage.position)
    )


async def test_a_menu_answered_over_two_replies(client, fake_sms):
    tenant, _ = await setup_flow(client, SURVEY)
    response, _ = await inbound(client, tenant, "survey")
    assert response.status_code == 200
    run = await waiting_run(client, tenant)
    assert run["in_dialogue"] is True and run["inbox"] == []
    assert (await inbound(client, tenant, "L"))[0].status_code == 200
    await waiting_run(client, tenant, waits=2)
    assert (await inbound(client, tenant, "red"))[0].status_code == 200
    [done] = await finished_run(tenant)
    assert done["status"] == "ended"
    assert await outgoing_texts(tenant) == [
        "Size? S, M or L",
        "Colour?",
        "You chose L in red (timed out: false)",
    ]
    # No new run started for the replies; both were consumed, in order, by this run.
    assert len(await runs_of(tenant)) == 1
    shown = (await client.get(f"/v1.0/activeflows/{done['id']}", headers=tenant.admin.headers)).json()
    texts = {
        str(r["id"]): r["text"]
        for r in await Message.select(Message.id, Message.text).where(
            Message.customer_id == tenant.customer_id
        )
    }
    assert [(texts[m["message_id"]], m["state"]) for m in shown["inbox"]] == [
        ("L", "consumed"),
        ("red", "consumed"),
    ]
    assert shown["variables"]["size.channel"] == "sms" and shown["variables"]["size.timeout"] == "false"
    assert shown["in_dialogue"] is False and shown["waiting"] is False


async def test_a_reply_while_assigned_does_not_feed_the_run(client):
    tenant, _ = await setup_flow(
        client, [wait("size", "size", timeout_ms=1500), reply("got '${size.text}' ${size.timeout}")]
    )
    await inbound(client, tenant, "start")
    run = await waiting_run(client, tenant)
    conversation_id = run["conversation_id"]
    assigned = await client.put(
        f"/v1.0/conversations/{conversation_id}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assigned.status_code == 200, assigned.text
    await inbound(client, tenant, "for the agent")
    [done] = await finished_run(tenant)
    assert await outgoing_texts(tenant) == ["got '' true"]
    assert await inbox_rows(done["id"]) == []
    assert len(await runs_of(tenant)) == 1


async def test_replies_land_in_commit_order_and_start_nothing(client):
    """20 concurrent replies to a run in dialogue: all in its inbox, positions in commit order
    (the order of their inbox rows' creation), consumed in that order; no new run."""
    collect = [wait(f"w{i}", f"r{i}") for i in range(20)]
    summary = " ".join(f"${{r{i}.text}}" for i in range(20))
    tenant, _ = await setup_flow(client, [*collect, reply(summary, "summary")])
    await inbound(client, tenant, "start")
    run = await wait_for(lambda: _in_dialogue(tenant))
    responses = await asyncio.gather(*(inbound(client, tenant, f"m{i}") for i in range(20)))
    assert all(r.status_code == 200 for r, _ in responses)
    [done] = await finished_run(tenant, within=60)
    assert done["status"] == "ended", done["reason"]
    rows = await inbox_rows(run["id"])
    assert [r["position"] for r in rows] == list(range(1, 21))
    assert all(r["state"] == "consumed" and r["delivered"] for r in rows)
    # Commit order: each position was taken under the run's row lock, so creation order is positions.
    assert [r["tm_create"] for r in rows] == sorted(r["tm_create"] for r in rows)
    texts = {
        r["id"]: r["text"]
        for r in await Message.select(Message.id, Message.text).where(
            Message.customer_id == tenant.customer_id
        )
    }
    in_order = [texts[r["message_id"]] for r in rows]
    assert sorted(in_order) == sorted(f"m{i}" for i in range(20))
    assert (await outgoing_texts(tenant)) == [" ".join(in_order)]
    assert len(await runs_of(tenant)) == 1


async def _in_dialogue(tenant):
    rows = await runs_of(tenant)
    return rows[0] if len(rows) == 1 and rows[0]["in_dialogue"] else None


async def test_a_lost_signal_is_delivered_by_recovery_once(client, settings, temporal_env, monkeypatch):
    """A crash between the inbound commit and the signal: recovery delivers it; a second delivery
    of the same message (recovery again, a provider retry) feeds the run nothing more."""
    tenant, _ = await setup_flow(
        client,
        [
            wait("size", "size"),
            reply("got ${size.text}", "got"),
            wait("more", "more", 1500),
            reply("then '${more.text}'", "then"),
        ],
    )
    await inbound(client, tenant, "start")
    run = await wait_for(lambda: _in_dialogue(tenant))

    async def lost(*args, **kwargs):
        raise ConnectionError("injected: the API died before the signal")

    monkeypatch.setattr(hub_temporal, "deliver_reply", lost)
    response, sid = await inbound(client, tenant, "M")
    monkeypatch.undo()
    assert response.status_code == 200
    [row] = await inbox_rows(run["id"])
    assert row["delivered"] is False
    assert await recover_dialogue_replies(temporal_env.client, settings, older_than_s=0) >= 1
    # Delivered twice (the signal may have landed before a crash): ignored by message id.
    await hub_temporal.deliver_reply(temporal_env.client, {**row, "workflow_id": run["workflow_id"]})
    # The provider retries its webhook: a duplicate, nothing new.
    assert (await inbound(client, tenant, "M", sid=sid))[0].status_code == 200
    [done] = await finished_run(tenant)
    assert await outgoing_texts(tenant) == ["got M", "then ''"]
    assert [r["state"] for r in await inbox_rows(run["id"])] == ["consumed"]


async def test_unconsumed_messages_are_marked_and_start_nothing(client):
    tenant, _ = await setup_flow(
        client, [wait("one", "one"), {"id": "nap", "type": "sleep", "option": {"duration_ms": 1500}}]
    )
    await inbound(client, tenant, "start")
    run = await wait_for(lambda: _in_dialogue(tenant))
    await inbound(client, tenant, "first")
    await wait_for(lambda: _states(run["id"], ["consumed"]))
    await inbound(client, tenant, "during the nap")  # still in dialogue: routed, never consumed
    [done] = await finished_run(tenant)
    assert done["in_dialogue"] is False
    assert [r["state"] for r in await inbox_rows(run["id"])] == ["consumed", "unconsumed"]
    assert len(await runs_of(tenant)) == 1
    # Out of dialogue now: the next message starts a new run.
    await inbound(client, tenant, "again")
    await wait_for(lambda: _count(tenant, 2))


async def _states(run_id, states):
    return [r["state"] for r in await inbox_rows(run_id)] == states


async def _count(tenant, n):
    return len(await runs_of(tenant)) == n


async def test_a_second_run_entering_a_wait_supersedes_the_first(client, temporal_env, settings):
    """Two runs of one conversation: the second one's wait ends the first one's dialogue."""
    tenant, _ = await setup_flow(client, [wait("w", "w"), reply("first run: ${w.timeout}")])
    await inbound(client, tenant, "start")
    first = await wait_for(lambda: _in_dialogue(tenant))
    # Another run of the same conversation (e.g. started by a flow of another trigger).
    second_id = uuid.uuid4()
    await Activeflow.insert(
        Activeflow(
            **{
                **{
                    k: v
                    for k, v in first.items()
                    if k not in ("id", "workflow_id", "in_dialogue", "message_id")
                },
                "id": second_id,
                "workflow_id": f"activeflow-test-{second_id}",
                "started": False,
            }
        )
    )
    second = await Activeflow.select().where(Activeflow.id == second_id).first()
    await hub_temporal.start_activeflow(temporal_env.client, settings, second)
    await wait_for(lambda: _texts(tenant, ["first run: superseded"]))
    dialogue = await Activeflow.select(Activeflow.id).where(
        Activeflow.customer_id == tenant.customer_id, Activeflow.in_dialogue.eq(True)
    )
    assert [r["id"] for r in dialogue] == [second_id]
    await inbound(client, tenant, "for the second")
    await wait_for(lambda: _texts(tenant, ["first run: superseded", "first run: false"]))


async def _texts(tenant, texts):
    return await outgoing_texts(tenant) == texts


async def test_a_flow_edited_while_a_run_waits_keeps_its_version(client):
    tenant, flow = await setup_flow(client, [wait("w", "w"), reply("v1 says ${w.text}")])
    await inbound(client, tenant, "start")
    run = await wait_for(lambda: _in_dialogue(tenant))
    edited = await client.put(
        f"/v1.0/flows/{flow['id']}",
        json={"actions": [wait("w", "w"), reply("v2 says ${w.text}")]},
        headers=tenant.admin.headers,
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    await inbound(client, tenant, "hi")
    [done] = await finished_run(tenant)
    assert done["id"] == run["id"] and done["flow_version"] == 1
    assert await outgoing_texts(tenant) == ["v1 says hi"]


async def test_wait_for_reply_is_validated_at_save_time(client):
    tenant, _ = await setup_flow(client, [reply("x")])
    for option in (
        {},
        {"timeout_ms": 0},
        {"timeout_ms": 1000, "into": "bad name"},
        {"timeout_ms": 10, "x": 1},
    ):
        body = {"name": "bad", "actions": [{"id": "w", "type": "wait_for_reply", "option": option}]}
        response = await client.post("/v1.0/flows", json=body, headers=tenant.admin.headers)
        message = response.json()["error"]["message"]
        assert response.status_code == 400 and "'w'" in message, (option, response.text)
    ok = {"name": "ok", "actions": [{"id": "w", "type": "wait_for_reply", "option": {"timeout_ms": 1000}}]}
    saved = await client.post("/v1.0/flows", json=ok, headers=tenant.admin.headers)
    assert saved.json()["actions"][0]["option"] == {"timeout_ms": 1000, "into": "reply"}
