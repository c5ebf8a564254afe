"""Standard Webhooks delivery semantics: the event's `timestamp` in the body, 410 Gone disabling the
endpoint (until the next PUT), and Retry-After on 429/503 within the retry schedule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from hub.tables import Event, WebhookDelivery
from tests.helpers import make_tenant, wait_for
from tests.integration.test_webhooks import configure, deliveries, inbound, outbox
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.usefixtures("dispatchers")


async def relayed(customer_id) -> bool:
    rows = await Event.select(Event.relayed_at).where(Event.customer_id == customer_id)
    return all(r["relayed_at"] is not None for r in rows)


async def test_the_body_carries_when_the_event_happened(client):
    tenant = await make_tenant()
    receiver = await Receiver().start()
    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550291")
        written = await Event.select().where(Event.customer_id == tenant.customer_id).order_by(Event.seq)
        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) == len(written)))
    finally:
        await receiver.stop()
    by_id = {r.webhook_id: r.body for r in receiver.received}
    for event in written:
        body = by_id[str(event["id"])]
        assert list(body) == ["type", "timestamp", "data"]
        assert body["type"] == event["type"]  # the seed's event names
        assert body["timestamp"].endswith("Z")
        assert datetime.fromisoformat(body["timestamp"]) == event["tm_create"]


async def test_410_gone_disables_the_endpoint_until_the_next_put(client):
    tenant = await make_tenant()
    receiver = Receiver(answer_status=410)  # not listening yet: every delivery is queued first
    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550301")
        await inbound(client, tenant, "+14155550302")
        events = await outbox(tenant.customer_id)
        assert len(events) == 6

        async def all_queued():
            return len(await deliveries(client, tenant, status="pending")) == len(events)

        await wait_for(all_queued)
        await receiver.start()

        async def all_settled():
            rows = await deliveries(client, tenant)
            return rows if len(rows) == len(events) and all(d["status"] != "pending" for d in rows) else None

        rows = await wait_for(all_settled)
        # One answer per conversation at most (both may be in flight together); no retry after it.
        assert 1 <= len(receiver.requests) <= 2 and len(set(receiver.requests)) == len(receiver.requests)
        assert {d["status"] for d in rows} == {"failed"}
        gone = [d for d in rows if d["last_status_code"] == 410]
        assert sorted(d["event_id"] for d in gone) == sorted(receiver.requests)
        assert all(d["next_attempt_at"] is None for d in gone)
        for delivery in rows:
            if delivery not in gone:
                assert delivery["last_status_code"] is None
                assert delivery["last_error"].startswith("webhook endpoint disabled (answered 410")

        customer = (await client.get("/v1.0/customer", headers=tenant.agent.headers)).json()
        assert customer["webhook_uri"] == receiver.url  # kept, only disabled
        assert customer["webhook_disabled_reason"].startswith("answered 410")
        disabled_at = datetime.fromisoformat(customer["webhook_disabled_at"])
        assert timedelta(0) <= datetime.now(UTC) - disabled_at < timedelta(minutes=5)

        # While disabled, new events are owed nothing (as without an endpoint).
        await inbound(client, tenant, "+14155550301", "while disabled")
        await wait_for(lambda: relayed(tenant.customer_id))
        assert await WebhookDelivery.count().where(WebhookDelivery.customer_id == tenant.customer_id) == 6
        posts = len(receiver.requests)

        # The next PUT enables it again; failed deliveries are replayable.
        receiver.answer_status = 0
        enabled = await client.put(
            "/v1.0/customer", json={"webhook_uri": receiver.url}, headers=tenant.admin.headers
        )
        assert enabled.status_code == 200, enabled.text
        shown = (await client.get("/v1.0/customer", headers=tenant.admin.headers)).json()
        for customer in (enabled.json(), shown):
            assert customer["webhook_disabled_at"] is None and customer["webhook_disabled_reason"] == ""
        replayed = gone[0]
        response = await client.post(
            f"/v1.0/webhook_deliveries/{replayed['id']}/replay", headers=tenant.admin.headers
        )
        assert response.status_code == 200, response.text
        known = len(await outbox(tenant.customer_id))
        await inbound(client, tenant, "+14155550302", "after")
        after = (await outbox(tenant.customer_id))[known:]
        assert len(after) == 2
        wanted = {replayed["event_id"], *(str(e["id"]) for e in after)}
        await wait_for(lambda: asyncio.sleep(0, set(receiver.ids()) == wanted))
    finally:
        await receiver.stop()
    assert len(receiver.requests) == posts + len(wanted)


async def test_retry_after_on_429_and_503_delays_retries_within_the_schedule(client, settings):
    schedule = settings.resolved_webhook_retry_schedule
    longest = max(schedule)
    assert schedule[:3] == (0.2, 0.4, 0.6) and longest == 1
    tenant = await make_tenant()
    receiver = await Receiver(answer_status=429, answer_headers={"Retry-After": "30"}).start()

    async def first_delivery(**where):
        async def found():
            row = await WebhookDelivery.select().where(WebhookDelivery.event_id == first).first()
            return row if row and all(row[k] == v for k, v in where.items()) else None

        return await wait_for(found)

    try:
        await configure(client, tenant, receiver)
        await inbound(client, tenant, "+14155550311")
        events = await outbox(tenant.customer_id)
        first = events[0]["id"]
        await wait_for(lambda: asyncio.sleep(0, receiver.requests.count(str(first)) >= 2))
        row = await first_delivery(last_status_code=429)
        # Thirty seconds asked, bounded by the schedule's longest delay (not 0.2 s or 0.4 s).
        assert row["status"] == "pending" and row["attempts"] in (1, 2, 3)
        assert (row["next_attempt_at"] - row["tm_update"]).total_seconds() == pytest.approx(longest)
        gap = receiver.request_times[1] - receiver.request_times[0]
        assert gap >= longest - 0.05, gap

        # An HTTP date an hour ahead, on a 503: the same bound (the schedule says 0.6 s here).
        later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
        receiver.answer_status, receiver.answer_headers = 503, {"Retry-After": later}
        row = await first_delivery(last_status_code=503)
        assert row["status"] == "pending"
        assert (row["next_attempt_at"] - row["tm_update"]).total_seconds() == pytest.approx(longest)

        receiver.answer_status = 0
        wanted = {str(e["id"]) for e in events}
        await wait_for(lambda: asyncio.sleep(0, set(receiver.ids()) == wanted), within=30)
    finally:
        await receiver.stop()
    final = await first_delivery(status="delivered")
    assert final["attempts"] == receiver.requests.count(str(first)) >= 3
