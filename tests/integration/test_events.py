"""GET /v1.0/events: live events across two API processes sharing Redis, the plain agent's filter,
resuming with Last-Event-ID from the outbox, and the in-memory backend of the embedded run."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime

import httpx
import pytest
from redis.asyncio import Redis

from activities.publish import EventPublisher
from hub.tables import Conversation, Event
from tests.helpers import (
    JWT_SECRET,
    free_port,
    make_member,
    make_tenant,
    serving,
    signed_sms,
    sms_params,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("dispatchers")


class Stream:
    """An SSE client reading /v1.0/events in the background; `events` fills as messages arrive."""

    def __init__(self, base_url: str, token: str, last_event_id: str | None = None) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            self.headers["Last-Event-ID"] = last_event_id
        self.events: list[dict] = []
        self.opened = asyncio.Event()
        self.status = 0
        # The server ended the stream (the client would reconnect with Last-Event-ID).
        self.ended = False
        self.unnamed = 0
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Stream:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        assert self.status == 200
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=None) as http:
            async with http.stream("GET", "/v1.0/events", headers=self.headers) as response:
                self.status = response.status_code
                assert response.headers["content-type"].startswith("text/event-stream")
                self.opened.set()
                message: dict[str, str] = {}
                async for line in response.aiter_lines():
                    if not line:
                        if "data" in message and "id" not in message:
                            self.unnamed += 1  # an EventSource would fire an event without id
                        if "data" in message and "id" in message:
                            self.events.append(
                                {
                                    "id": int(message["id"]),
                                    "event": message["event"],
                                    **json.loads(message["data"]),
                                }
                            )
                        message = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(":")
                        message[name] = value[1:] if value.startswith(" ") else value
                self.ended = True

    def ids(self) -> list[int]:
        return [e["id"] for e in self.events]

    async def until(self, seq: int, within: float = 20) -> list[dict]:
        """Waits for the event with id `seq`; returns everything received so far."""
        await wait_for(lambda: asyncio.sleep(0, seq in self.ids()), within=within, interval=0.05)
        return self.events


async def inbound(client, tenant, sender: str, text: str = "hello") -> None:
    params = sms_params(sender=sender, body=text)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def outbox(customer_id, after: int = 0) -> list[dict]:
    return await Event.select().where(Event.customer_id == customer_id, Event.seq > after).order_by(Event.seq)


async def relayed(tenant) -> bool:
    return all(r["relayed_at"] is not None for r in await outbox(tenant.customer_id))


async def conversation_of(tenant, sender: str) -> uuid.UUID:
    row = (
        await Conversation.select(Conversation.id)
        .where(Conversation.customer_id == tenant.customer_id, Conversation.peer_target == sender)
        .first()
    )
    return row["id"]


def start_serve(env: dict[str, str], log) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], env=env, stdout=out, stderr=out)


@pytest.fixture(scope="module")
async def second_api(settings, tmp_path_factory, pg_engine):
    """Another API process (`hub serve`), sharing the database and Redis with the test's own."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_REDIS_URL": settings.redis_url,
        "HUB_JWT_SECRET": JWT_SECRET,
        "HUB_HTTP_HOST": "127.0.0.1",
        "HUB_HTTP_PORT": str(port),
        "HUB_PUBLIC_URL": settings.public_url,
        "HUB_TEMPORAL_ADDRESS": settings.temporal_address,
        "HUB_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "HUB_DATA_DIR": str(tmp_path_factory.mktemp("second-api")),
        "HUB_LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("second-api-log") / "serve.log"
    proc = start_serve(env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:

            async def up():
                assert proc.poll() is None, log.read_text()
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up, within=60, interval=0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_an_event_caused_through_one_api_reaches_a_stream_of_the_other(client, second_api, fake_sms):
    tenant = await make_tenant()
    base_one = str(client.base_url).rstrip("/")
    async with (
        Stream(second_api, tenant.admin.token) as on_two,
        Stream(base_one, tenant.admin.token) as on_one,
    ):
        # Written by API one (the inbound hook), streamed by API two.
        await inbound(client, tenant, "+14155550201", "through one")
        written = await outbox(tenant.customer_id)
        await on_two.until(written[-1]["seq"])
        assert on_two.ids() == [e["seq"] for e in written]
        assert [e["event"] for e in on_two.events] == [
            "conversation_created",
            "conversation_message_created",
            "conversation_message_received",
        ]
        received = on_two.events[-1]
        assert received["type"] == "conversation_message_received"
        assert received["data"]["message"]["text"] == "through one"
        assert received["data"] == json.loads(written[-1]["data"])

        # Written by API two, streamed by API one.
        conversation_id = await conversation_of(tenant, "+14155550201")
        async with httpx.AsyncClient(base_url=second_api) as two:
            renamed = await two.put(
                f"/v1.0/conversations/{conversation_id}",
                json={"name": "renamed on two"},
                headers=tenant.admin.headers,
            )
        assert renamed.status_code == 200, renamed.text
        [updated] = await outbox(tenant.customer_id, written[-1]["seq"])
        events = await on_one.until(updated["seq"])
        assert events[-1]["event"] == "conversation_updated"
        assert events[-1]["data"]["name"] == "renamed on two"

        # Written by the worker (the provider accepted the message), streamed by both.
        sent = await client.post(
            f"/v1.0/conversations/{conversation_id}/messages",
            json={"text": "to the phone"},
            headers=tenant.admin.headers,
        )
        assert sent.status_code == 200

        async def settled_event():
            rows = await outbox(tenant.customer_id, updated["seq"])
            done = [r for r in rows if json.loads(r["data"]).get("status") == "done"]
            return done[0] if done else None

        done = await wait_for(settled_event)
        for stream in (on_one, on_two):
            events = await stream.until(done["seq"])
            assert events[-1]["event"] == "conversation_message_updated"
            assert events[-1]["data"]["id"] == sent.json()["id"] and events[-1]["data"]["status"] == "done"
        assert len(set(on_two.ids())) == len(on_two.ids()), "no event twice"
        assert on_one.unnamed == on_two.unnamed == 0


async def test_a_plain_agent_streams_only_conversations_it_owns(client, second_api):
    tenant = await make_tenant()
    await inbound(client, tenant, "+14155550211")
    await inbound(client, tenant, "+14155550212")
    mine = await conversation_of(tenant, "+14155550211")
    others = await conversation_of(tenant, "+14155550212")
    assigned = await client.put(
        f"/v1.0/conversations/{mine}", json={"owner_id": str(tenant.agent.id)}, headers=tenant.admin.headers
    )
    assert assigned.status_code == 200
    before = (await outbox(tenant.customer_id))[-1]["seq"]
    await wait_for(lambda: relayed(tenant))  # what came before the stream opened stays out of it

    async with Stream(second_api, tenant.agent.token) as agent_stream:
        await inbound(client, tenant, "+14155550212", "not for the agent")
        await inbound(client, tenant, "+14155550211", "for the agent")
        await client.put(f"/v1.0/conversations/{others}", json={"name": "x"}, headers=tenant.admin.headers)
        await inbound(client, tenant, "+14155550211", "last one")
        since = await outbox(tenant.customer_id, before)
        await agent_stream.until(since[-1]["seq"])
    expected = [e["seq"] for e in since if e["conversation_id"] == mine]
    assert agent_stream.ids() == expected
    assert len(expected) == 4 and len(since) == 7
    assert all(
        e["data"].get("conversation_id", e["data"].get("id")) == str(mine) for e in agent_stream.events
    )

    # The backlog of a resumed stream is filtered the same way: events while the agent owned it.
    async with Stream(second_api, tenant.agent.token, last_event_id="0") as resumed:
        owned = [e["seq"] for e in await outbox(tenant.customer_id) if e["owner_id"] == tenant.agent.id]
        await resumed.until(owned[-1])
    assert resumed.ids() == owned
    assert {e["seq"] for e in await outbox(tenant.customer_id) if e["conversation_id"] == others}.isdisjoint(
        resumed.ids()
    )


async def test_an_ownership_change_reaches_the_owner_before_and_after_it(client):
    tenant = await make_tenant()
    a, b = tenant.agent, tenant.other_agent
    third = await make_member(tenant.customer_id, 0, "third")
    base = str(client.base_url).rstrip("/")
    await inbound(client, tenant, "+14155550261")
    await inbound(client, tenant, "+14155550262")
    conversation = await conversation_of(tenant, "+14155550261")
    elsewhere = await conversation_of(tenant, "+14155550262")
    path = f"/v1.0/conversations/{conversation}"
    assigned = await client.put(path, json={"owner_id": str(a.id)}, headers=tenant.admin.headers)
    assert assigned.status_code == 200
    before = (await outbox(tenant.customer_id))[-1]["seq"]
    await wait_for(lambda: relayed(tenant))

    async with (
        Stream(base, a.token) as on_a,
        Stream(base, b.token) as on_b,
        Stream(base, third.token) as on_third,
    ):
        # A owns it; an admin gives it to B: A learns it lost it, B that it got it.
        moved = await client.put(path, json={"owner_id": str(b.id)}, headers=tenant.admin.headers)
        assert moved.status_code == 200
        [moved_event] = await outbox(tenant.customer_id, before)
        # B gives it up: B (the owner before) sees that too.
        unassigned = await client.post(f"{path}/unassign", headers=b.headers)
        assert unassigned.status_code == 200, unassigned.text
        [unassigned_event] = await outbox(tenant.customer_id, moved_event["seq"])
        # Last, something for the third agent: its stream has seen everything before it by then.
        await client.put(
            f"/v1.0/conversations/{elsewhere}", json={"owner_id": str(third.id)}, headers=tenant.admin.headers
        )
        [for_third] = await outbox(tenant.customer_id, unassigned_event["seq"])
        await on_a.until(moved_event["seq"])
        await on_b.until(unassigned_event["seq"])
        await on_third.until(for_third["seq"])
    assert on_a.ids() == [moved_event["seq"]]
    assert on_b.ids() == [moved_event["seq"], unassigned_event["seq"]]
    assert on_third.ids() == [for_third["seq"]]
    change = on_a.events[0]
    assert change["event"] == change["type"] == "conversation_updated"
    assert change["data"]["id"] == str(conversation) and change["data"]["owner_id"] == str(b.id)
    assert on_b.events[1]["data"]["owner_type"] == ""
    # The body is the webhook's: with the time the event happened.
    assert datetime.fromisoformat(change["timestamp"]) == moved_event["tm_create"]

    # Resuming from the outbox gives A the same: the change that took the conversation away.
    async with Stream(base, a.token, last_event_id=str(before)) as resumed:
        await resumed.until(moved_event["seq"])
        await asyncio.sleep(0.5)  # anything else for A would have come by now, in order
    assert resumed.ids() == [moved_event["seq"]]


async def test_reconnecting_with_last_event_id_misses_nothing(client, second_api):
    tenant = await make_tenant()
    async with Stream(second_api, tenant.admin.token) as first:
        await inbound(client, tenant, "+14155550221", "one")
        seen = await outbox(tenant.customer_id)
        await first.until(seen[-1]["seq"])
    last_id = first.ids()[-1]
    assert first.ids() == [e["seq"] for e in seen]

    # While nobody listens: more events, relayed and published to no one.
    await inbound(client, tenant, "+14155550222", "two")
    await inbound(client, tenant, "+14155550221", "three")
    missed = await outbox(tenant.customer_id, last_id)
    assert len(missed) == 5

    await wait_for(lambda: relayed(tenant))

    async with Stream(client.base_url, tenant.admin.token, last_event_id=str(last_id)) as resumed:
        await resumed.until(missed[-1]["seq"])
        assert resumed.ids() == [e["seq"] for e in missed]
        # Then live again, with nothing repeated.
        conversation_id = await conversation_of(tenant, "+14155550222")
        await client.put(
            f"/v1.0/conversations/{conversation_id}", json={"name": "live"}, headers=tenant.admin.headers
        )
        [live] = await outbox(tenant.customer_id, missed[-1]["seq"])
        await resumed.until(live["seq"])
    assert resumed.ids() == [e["seq"] for e in missed] + [live["seq"]]
    assert [e["data"]["message"]["text"] for e in resumed.events if e["event"].endswith("received")] == [
        "two",
        "three",
    ]


async def test_streams_resume_from_the_outbox_after_redis_dropped_the_subscription(client, settings):
    tenant = await make_tenant()
    redis = Redis.from_url(settings.redis_url)
    try:
        async with Stream(client.base_url, tenant.admin.token) as first:
            await inbound(client, tenant, "+14155550241", "before")
            before = await outbox(tenant.customer_id)
            await first.until(before[-1]["seq"])
            # Drop this process's API subscription only (other test sessions share the server).
            ours = [
                c for c in await redis.client_list(_type="pubsub") if c["name"] == f"hub-api-{os.getpid()}"
            ]
            assert ours
            for connection in ours:
                await redis.client_kill_filter(_id=connection["id"])
            await wait_for(lambda: asyncio.sleep(0, first.ended))
    finally:
        await redis.aclose()
    assert first.ids() == [e["seq"] for e in before]

    await inbound(client, tenant, "+14155550241", "after")
    async with Stream(client.base_url, tenant.admin.token, last_event_id=str(first.ids()[-1])) as resumed:
        after = await outbox(tenant.customer_id, first.ids()[-1])
        await resumed.until(after[-1]["seq"])
        # And live again over the new subscription.
        conversation_id = await conversation_of(tenant, "+14155550241")
        await client.put(
            f"/v1.0/conversations/{conversation_id}", json={"name": "live"}, headers=tenant.admin.headers
        )
        [live] = await outbox(tenant.customer_id, after[-1]["seq"])
        await resumed.until(live["seq"])
    assert resumed.ids() == [e["seq"] for e in after] + [live["seq"]]


async def test_stream_refuses_bad_requests(client):
    tenant = await make_tenant()
    assert (await client.get("/v1.0/events")).status_code == 401
    for bad in ("abc", "-1", "1.5", "9" * 30):
        response = await client.get("/v1.0/events", headers={**tenant.admin.headers, "Last-Event-ID": bad})
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["reason"] == "bad_request"


async def test_without_redis_the_relay_feeds_api_servers_of_its_own_process(settings, pg):
    """The embedded run: without Redis the relay's publisher reaches the in-memory channels of the
    API servers in its own process."""
    memory = dataclasses.replace(settings, redis_url="")
    publisher = EventPublisher("")
    async with serving(memory, restore_engine=pg) as url:
        tenant = await make_tenant()
        async with Stream(url, tenant.admin.token) as stream:
            async with httpx.AsyncClient(base_url=url) as http:
                await inbound(http, tenant, "+14155550231", "in memory")
            rows = await outbox(tenant.customer_id)
            await publisher.publish(rows)
            await stream.until(rows[-1]["seq"])
        assert stream.ids() == [r["seq"] for r in rows]
