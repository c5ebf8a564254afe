"""Customer webhooks end to end: configuration and secrets, signed deliveries through the Temporal
relay and delivery shards, retries, timeouts, replays, the delivery log and the target guard."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from activities.webhook_http import WebhookSender
from hub import agents, db, dispatch, events, webhooks
from hub.dispatch import QueuedDelivery
from hub.tables import Customer, Event, WebhookDelivery
from hub.webhooks import Endpoint, new_secret
from tests.helpers import make_tenant, serving, signed_sms, sms_params, wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("dispatchers")


async def configure(client, tenant, receiver: Receiver, method: str = "POST") -> str:
    response = await client.put(
        "/v1.0/customer",
        json={"webhook_uri": receiver.url, "webhook_method": method},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    secret = response.json()["webhook_secret"]
    receiver.secrets.append(secret)
    return secret


async def inbound(client, tenant, sender: str, text: str = "hello") -> None:
    path, body, headers = signed_sms(
        tenant.account["id"], tenant.auth_token, sms_params(sender=sender, body=text)
    )
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def outbox(customer_id) -> list[dict]:
    return (
        await Event.select(Event.id, Event.seq, Event.conversation_id, Event.type)
        .where(Event.customer_id == customer_id)
        .order_by(Event.seq)
    )


async def deliveries(client, tenant, **filters) -> list[dict]:
    """Every delivery of the tenant through the API, following next_page_token."""
    rows, token = [], ""
    while True:
        params = {**filters, "page_size": 100, **({"page_token": token} if token else {})}
        response = await client.get("/v1.0/webhook_deliveries", params=params, headers=tenant.admin.headers)
        assert response.status_code == 200, response.text
        rows += response.json()["result"]
        token = response.json()["next_page_token"]
        if not token:
            return rows


def assert_in_order_per_conversation(received_ids: list[str], events: list[dict]) -> None:
    by_id = {str(e["id"]): e for e in events}
    seen: dict[uuid.UUID, list[int]] = defaultdict(list)
    for webhook_id in received_ids:
        event = by_id[webhook_id]
        seen[event["conversation_id"]].append(event["seq"])
    for conversation_id, seqs in seen.items():
        assert seqs == sorted(seqs), f"conversation {conversation_id} out of order: {seqs}"


# --- the customer's endpoint and secret ------------------------------------------------------------


async def test_endpoint_settings_and_the_secret_shown_once(client):
    tenant = await make_tenant()
    receiver = Receiver()
    first = await client.get("/v1.0/customer", headers=tenant.agent.headers)
    assert first.status_code == 200
    assert first.json()["id"] == str(tenant.customer_id)
    assert first.json()["webhook_uri"] == "" and "webhook_secret" not in first.json()

    body = {"webhook_uri": receiver.url}
    assert (await client.put("/v1.0/customer", json=body, headers=tenant.agent.headers)).status_code == 403
    for bad in (
        {"webhook_uri": "ftp://example.com/x"},
        {"webhook_uri": "example.com/hook"},
        {"webhook_uri": receiver.url, "webhook_method": "GET"},
        {"webhook_uri": 5},
        {"webhook_uri": "http://" + "a" * 2100},
        {"webhook_uri": "http://host.invalid/hook"},
    ):
        response = await client.put("/v1.0/customer", json=bad, headers=tenant.admin.headers)
        assert response.status_code == 400, (bad, response.text)

    created = await client.put("/v1.0/customer", json=body, headers=tenant.manager.headers)
    assert created.status_code == 200, created.text
    secret = created.json()["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created.json()["webhook_uri"] == receiver.url and created.json()["webhook_method"] == "POST"

    again = await client.put("/v1.0/customer", json={"webhook_method": "PUT"}, headers=tenant.admin.headers)
    assert again.status_code == 200
    assert "webhook_secret" not in again.json()
    assert (again.json()["webhook_uri"], again.json()["webhook_method"]) == (receiver.url, "PUT")
    shown = await client.get("/v1.0/customer", headers=tenant.admin.headers)
    assert "webhook_secret" not in shown.json() and secret not in shown.text

    rotate = "/v1.0/customer/webhook_secret/rotate"
    assert (await client.post(rotate, headers=tenant.agent.headers)).status_code == 403
    rotated = await client.post(rotate, headers=tenant.admin.headers)
    assert rotated.status_code == 200
    new = rotated.json()["webhook_secret"]
    assert new.startswith("whsec_") and new != secret
    row = await Customer.select().where(Customer.id == tenant.customer_id).first()
    assert (row["webhook_secret"], row["webhook_secret_previous"]) == (new, secret)
    assert secret not in (await client.get("/v1.0/customer", headers=tenant.admin.headers)).text

    off = await client.put("/v1.0/customer", json={"webhook_uri": ""}, headers=tenant.admin.headers)
    assert off.status_code == 200 and off.json()["webhook_uri"] == ""


# --- delivery --------------------------------------------------------------------------------------


async def test_receiver_down_for_three_attempts_gets_every_event_once_in_order(client):
    tenant = await make_tenant()
    receiver = Receiver()  # its port is reserved; nothing listens yet
    await configure(client, tenant, receiver)
    senders = ["+14155550101", "+14155550102", "+14155550103"]
    for round_ in range(3):
        for sender in senders:
            await inbound(client, tenant, sender, f"message {round_}")
    events = await outbox(tenant.customer_id)
    assert len(events) == 3 * (3 + 2 + 2)

    async def heads_tried_three_times():
        pending = await deliveries(client, tenant, status="pending")
        tried = [d for d in pending if d["attempts"] >= 3]
        return tried if len(tried) == len(senders) else None

    heads = await wait_for(heads_tried_three_times)
    for head in heads:
        assert head["last_status_code"] is None and head["last_error"]
        assert head["next_attempt_at"] is not None
    await receiver.start()
    try:
        wanted = {str(e["id"]) for e in events}
        await wait_for(lambda: asyncio.sleep(0, set(receiver.ids()) == wanted), within=30)
    finally:
        await receiver.stop()

    assert sorted(receiver.ids()) == sorted(wanted), "each event exactly once by webhook-id"
    assert receiver.bad_signatures == 0
    assert_in_order_per_conversation(receiver.ids(), events)
    by_id = {r.webhook_id: r.body for r in receiver.received}
    for event in events:
        body = by_id[str(event["id"])]
        assert body["type"] == event["type"] and set(body) == {"type", "timestamp", "data"}
    received_events = [by_id[str(e["id"])] for e in events if e["type"] == "conversation_message_received"]
    assert {b["data"]["message"]["text"] for b in received_events} == {f"message {i}" for i in range(3)}

    final = await deliveries(client, tenant)
    assert len(final) == len(events) and {d["status"] for d in final} == {"delivered"}
    first_of_each = {d["event_id"] for d in final if d["attempts"] >= 4}
    assert first_of_each == {h["event_id"] for h in heads}


async def test_a_receiver_taking_six_seconds_is_a_failed_attempt_and_retried(client, settings):
    assert settings.webhook_timeout_s == 5
    tenant = await make_tenant()
    receiver = await Receiver(delays=[6.0]).start()
    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550111")
        events = await outbox(tenant.customer_id)
        first = str(events[0]["id"])

        async def all_delivered():
            rows = await deliveries(client, tenant)
            return (
                rows if len(rows) == len(events) and all(d["status"] == "delivered" for d in rows) else None
            )

        rows = await wait_for(all_delivered, within=30)
    finally:
        await receiver.stop()
    by_event = {d["event_id"]: d for d in rows}
    assert by_event[first]["attempts"] == 2
    assert receiver.requests.count(first) == 2, "the slow attempt, then the retry with the same webhook-id"
    assert [by_event[str(e["id"])]["attempts"] for e in events[1:]] == [1] * (len(events) - 1)
    # The conversation's later events waited for the first one.
    assert receiver.requests[:2] == [first, first]


async def test_failing_delivery_exhausts_its_schedule_then_the_conversation_moves_on(client, settings):
    tenant = await make_tenant()
    receiver = await Receiver().start()
    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550121")
        events = await outbox(tenant.customer_id)
        first, later = str(events[0]["id"]), [str(e["id"]) for e in events[1:]]
        receiver.fail_ids.add(first)

        async def settled():
            rows = await deliveries(client, tenant)
            done = [d for d in rows if d["status"] != "pending"]
            return rows if len(done) == len(events) else None

        rows = await wait_for(settled, within=30)
        by_event = {d["event_id"]: d for d in rows}
        failed = by_event[first]
        schedule = settings.resolved_webhook_retry_schedule
        assert failed["status"] == "failed"
        assert failed["attempts"] == len(schedule) + 1 == receiver.requests.count(first)
        assert failed["last_status_code"] == 500 and "receiver says no" in failed["last_error"]
        assert failed["next_attempt_at"] is None
        assert all(by_event[i]["status"] == "delivered" for i in later)
        # Order held: nothing later in the conversation went out before the first one gave up.
        last_try = len(receiver.requests) - 1 - receiver.requests[::-1].index(first)
        assert all(receiver.requests.index(i) > last_try for i in later)

        listed = await deliveries(client, tenant, status="failed")
        assert [d["id"] for d in listed] == [failed["id"]]
        received_only = await deliveries(client, tenant, event_type="conversation_message_received")
        assert [d["event_type"] for d in received_only] == ["conversation_message_received"]

        # Replay: same webhook-id, a fresh schedule, delivered now that the receiver accepts it.
        receiver.fail_ids.clear()
        replay = await client.post(
            f"/v1.0/webhook_deliveries/{failed['id']}/replay", headers=tenant.admin.headers
        )
        assert replay.status_code == 200, replay.text
        assert replay.json()["status"] == "pending" and replay.json()["attempts"] == 0

        async def redelivered():
            row = await client.get(f"/v1.0/webhook_deliveries/{failed['id']}", headers=tenant.admin.headers)
            return row.json() if row.json()["status"] == "delivered" else None

        final = await wait_for(redelivered)
        assert final["attempts"] == 1 and final["last_status_code"] == 200 and final["last_error"] == ""
        assert receiver.ids() == [*later, first]
        # A delivered event can be replayed too; the receiver sees the same webhook-id again.
        delivered_id = by_event[later[0]]["id"]
        assert (
            await client.post(f"/v1.0/webhook_deliveries/{delivered_id}/replay", headers=tenant.admin.headers)
        ).status_code == 200
        await wait_for(lambda: asyncio.sleep(0, receiver.ids().count(later[0]) == 2))
    finally:
        await receiver.stop()
    assert receiver.bad_signatures == 0


async def test_delivery_log_permissions_paging_and_validation(client):
    tenant = await make_tenant()
    other = await make_tenant()
    receiver = await Receiver().start()
    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550131")
        await inbound(client, tenant, "+14155550132")
        events = await outbox(tenant.customer_id)
        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) == len(events)))
    finally:
        await receiver.stop()

    url = "/v1.0/webhook_deliveries"
    assert (await client.get(url, headers=tenant.agent.headers)).status_code == 403
    assert (await client.get(url, headers=tenant.manager.headers)).status_code == 200
    assert (await client.get(url)).status_code == 401
    for params in ({"status": "lost"}, {"event_type": "nope"}, {"page_size": 0}, {"page_token": "x!"}):
        response = await client.get(url, params=params, headers=tenant.admin.headers)
        assert response.status_code == 400, (params, response.text)

    first = await client.get(url, params={"page_size": 2}, headers=tenant.admin.headers)
    page = first.json()
    assert len(page["result"]) == 2 and page["next_page_token"]
    everything = await deliveries(client, tenant)
    assert len(everything) == len(events) == 6
    assert [d["id"] for d in everything[:2]] == [d["id"] for d in page["result"]]
    stamps = [d["tm_create"] for d in everything]
    assert stamps == sorted(stamps, reverse=True), "newest first"
    one = everything[0]
    assert set(one) >= {"event_id", "event_type", "status", "attempts", "last_status_code", "next_attempt_at"}
    assert (await client.get(url, headers=other.admin.headers)).json()["result"] == []
    for path in (f"{url}/{one['id']}", f"{url}/{one['id']}/replay"):
        method = client.post if path.endswith("replay") else client.get
        assert (await method(path, headers=other.admin.headers)).status_code == 404
        assert (await method(path, headers=tenant.agent.headers)).status_code == 403
    assert (await client.post(f"{url}/not-a-uuid/replay", headers=tenant.admin.headers)).status_code == 400


async def test_rotation_signs_with_the_new_and_the_previous_secret(client):
    tenant = await make_tenant()
    receiver = await Receiver().start()
    try:
        old = await configure(client, tenant, receiver)
        rotated = await client.post("/v1.0/customer/webhook_secret/rotate", headers=tenant.admin.headers)
        new = rotated.json()["webhook_secret"]
        receiver.secrets.append(new)
        await inbound(client, tenant, "+14155550141")
        events = await outbox(tenant.customer_id)
        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) == len(events)))
    finally:
        await receiver.stop()
    assert receiver.bad_signatures == 0
    assert all(r.verified_by == {old, new} for r in receiver.received)
    # Once the grace period is over, only the new secret signs.
    await Customer.update(
        {Customer.webhook_secret_previous_until: datetime.now(UTC) - timedelta(seconds=1)}
    ).where(Customer.id == tenant.customer_id)
    assert (await webhooks.endpoints([tenant.customer_id]))[tenant.customer_id].secrets == (new,)


async def test_no_endpoint_no_deliveries(client):
    tenant = await make_tenant()
    await inbound(client, tenant, "+14155550151")
    events = await outbox(tenant.customer_id)

    async def relayed():
        rows = await Event.select(Event.relayed_at).where(Event.customer_id == tenant.customer_id)
        return all(r["relayed_at"] is not None for r in rows)

    await wait_for(relayed)
    assert len(events) == 3
    assert await WebhookDelivery.count().where(WebhookDelivery.customer_id == tenant.customer_id) == 0


# --- the guard against private targets ---------------------------------------------------------------


@pytest.fixture
async def guarded_client(settings, pg):
    """A second API server with the guard on, as in production."""
    import httpx

    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    async with (
        serving(guarded, restore_engine=pg) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


async def test_private_and_loopback_targets_are_refused_when_the_guard_is_on(guarded_client):
    tenant = await make_tenant()
    for target in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.9/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
    ):
        response = await guarded_client.put(
            "/v1.0/customer", json={"webhook_uri": target}, headers=tenant.admin.headers
        )
        assert response.status_code == 400, (target, response.text)
        assert "refused" in response.json()["error"]["message"]
    row = await Customer.select().where(Customer.id == tenant.customer_id).first()
    assert row["webhook_uri"] == "" and row["webhook_secret"] == ""

    public = await guarded_client.put(
        "/v1.0/customer", json={"webhook_uri": "https://93.184.215.14/hook"}, headers=tenant.admin.headers
    )
    assert public.status_code == 200, public.text
    await guarded_client.put("/v1.0/customer", json={"webhook_uri": ""}, headers=tenant.admin.headers)


async def test_an_endpoints_cookies_ride_along_on_no_later_webhook():
    """The client keeps no cookie jar: what one answer sets is never sent with the next post (to
    this customer or another on the same host)."""
    receiver = await Receiver(answer_status=200, answer_headers={"set-cookie": "session=abc; Path=/"}).start()
    secret = new_secret()
    receiver.secrets.append(secret)
    sender = WebhookSender(allow_private=True, timeout_s=5)
    endpoint = Endpoint(f"http://localhost:{receiver.port}/hook", "POST", (secret,))
    try:
        for n in range(2):
            delivery = QueuedDelivery(
                uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), n, "conversation_updated", uuid.uuid4(), 0, None
            )
            attempt = await sender.send(endpoint, delivery)
            assert attempt.ok and attempt.status_code == 200, attempt
    finally:
        await sender.aclose()
        await receiver.stop()
    assert len(receiver.request_headers) == 2 and receiver.bad_signatures == 0
    assert "cookie" not in receiver.request_headers[1], receiver.request_headers[1]


async def test_the_guard_is_checked_again_when_connecting():
    """A target that passed the check (or whose DNS answer changed since) is refused when the
    connection is made, whether the URL names a host or an address."""
    receiver = await Receiver().start()
    secret = new_secret()
    receiver.secrets.append(secret)
    delivery = QueuedDelivery(
        id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        event_seq=1,
        event_type="conversation_updated",
        order_key=uuid.uuid4(),
        attempts=0,
        next_attempt_at=None,
        data='{"id": "x"}',
        event_time=datetime(2026, 12, 1, 10, 9, tzinfo=UTC),
    )
    guarded, open_ = WebhookSender(allow_private=False, timeout_s=5), WebhookSender(True, timeout_s=5)
    try:
        for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
            endpoint = Endpoint(f"http://{host}:{receiver.port}/hook", "POST", (secret,))
            refused = await guarded.send(endpoint, delivery)
            assert not refused.ok and refused.status_code is None
            assert refused.error.startswith("target refused") and "loopback" in refused.error, refused
        assert receiver.requests == []
        endpoint = Endpoint(f"http://localhost:{receiver.port}/hook", "PUT", (secret,))
        allowed = await open_.send(endpoint, delivery)
        assert allowed.ok and allowed.status_code == 200, allowed
        assert receiver.ids() == [str(delivery.event_id)]
        assert receiver.received[0].body == {
            "type": "conversation_updated",
            "timestamp": "2026-12-01T10:09:00Z",
            "data": {"id": "x"},
        }
        assert receiver.received[0].method == "PUT"
    finally:
        await guarded.aclose()
        await open_.aclose()
        await receiver.stop()


# --- SQLite (the embedded run) ---------------------------------------------------------------------


async def test_relay_and_delivery_run_on_sqlite_too(sqlite_engine, pg_engine):
    """`hub run` keeps everything in SQLite: the same relay, shards, retries and order there."""
    db.use_engine(sqlite_engine)  # the session's relay and shards now work on the SQLite file too
    receiver = await Receiver().start()
    try:
        customer = await agents.create_customer("sqlite")
        _, secret = await webhooks.configure(
            customer["id"], {"webhook_uri": receiver.url}, allow_private=True
        )
        receiver.secrets.append(secret)
        conversations = [uuid.uuid4(), uuid.uuid4()]
        rows = [
            events.event_row(
                events.MESSAGE_UPDATED,
                customer["id"],
                {"conversation_id": str(conversations[n % 2]), "n": n},
                conversation_id=conversations[n % 2],
            )
            for n in range(20)
        ]
        blocked = str(rows[0].id)
        receiver.fail_ids.add(blocked)
        async with db.transaction(sqlite_engine):
            await events.emit(*rows)

        async def retried_twice():
            row = await WebhookDelivery.select().where(WebhookDelivery.event_id == rows[0].id).first()
            return row if row and row["attempts"] >= 2 else None

        failing = await wait_for(retried_twice)
        heads = {h.order_key: h for h in await dispatch.pending_heads(0, 1)}
        assert heads[conversations[0]].event_seq == failing["event_seq"]
        # The other conversation went on; the blocked one holds its later events back.
        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) == 10))
        assert {r.body["data"]["n"] % 2 for r in receiver.received} == {1}
        receiver.fail_ids.clear()
        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) == 20), within=30)
    finally:
        db.use_engine(pg_engine)
        await receiver.stop()
    for parity in (0, 1):
        ns = [r.body["data"]["n"] for r in receiver.received if r.body["data"]["n"] % 2 == parity]
        assert ns == list(range(parity, 20, 2))
    assert receiver.bad_signatures == 0 and len(set(receiver.ids())) == 20
