"""The delivery queue under competing takers, on a PostgreSQL database of its own (no session relay
or shard sees it): several relays at once queue every event once, and several deliverers taking
a shard's fresh deliveries at once are handed each delivery exactly once, in event order, with
its event's data. This guards the single-statement relay and take_fresh of hub/dispatch.py, whose
row locks (FOR UPDATE SKIP LOCKED) are what keeps two takers apart."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import uuid
from pathlib import Path

from hub import agents, db, dispatch, events, webhooks
from hub.tables import Event, WebhookDelivery
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database

REPO = Path(__file__).resolve().parents[2]
EVENTS = 3000
CONVERSATIONS = 60
TAKERS = 8


async def test_competing_relays_and_deliverers_hand_out_each_delivery_once():
    # In a process of its own: the tables are bound to one engine per process, and this session's
    # relay and shards (other tests' dispatchers) would otherwise take part in the race.
    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        code = f"import asyncio; from {__name__} import race; asyncio.run(race({url!r}))"
        answer = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert answer.returncode == 0, answer.stderr[-4000:]
    assert "relayed and delivered once" in answer.stdout


async def race(url: str) -> None:
    engine = await db.open_engine(url)
    await db.migrate(engine)
    await db.start(engine, pool_size=TAKERS + 2)
    db.use_engine(engine)
    try:
        await _race(engine)
    finally:
        await db.stop(engine)
    print("relayed and delivered once")


async def _race(engine) -> None:
    customer = await agents.create_customer("race")
    await webhooks.configure(customer["id"], {"webhook_uri": "http://127.0.0.1:9/hook"}, allow_private=True)
    silent = await agents.create_customer("no endpoint")
    conversations = [uuid.uuid4() for _ in range(CONVERSATIONS)]
    rows = [
        events.event_row(
            events.MESSAGE_UPDATED,
            customer["id"] if n % 10 else silent["id"],
            {"n": n},
            conversation_id=conversations[n % CONVERSATIONS],
        )
        for n in range(EVENTS)
    ]
    async with db.transaction(engine):
        await events.emit(*rows)
    owed = {r.id for r in rows if r.customer_id == customer["id"]}

    async def relay() -> list[uuid.UUID]:
        taken = []
        while batch := await dispatch.relay_batch(100):
            taken += [r["id"] for r in batch]
        return taken

    relayed = [i for part in await asyncio.gather(*(relay() for _ in range(4))) for i in part]
    assert len(relayed) == EVENTS and set(relayed) == {r.id for r in rows}, "every event relayed once"
    assert await Event.count().where(Event.relayed_at.is_null()) == 0
    queued = await WebhookDelivery.select(WebhookDelivery.event_id, WebhookDelivery.fresh)
    assert {q["event_id"] for q in queued} == owed and len(queued) == len(owed)
    assert all(q["fresh"] for q in queued)

    async def deliverer() -> list[list[dispatch.QueuedDelivery]]:
        batches = []
        while batch := await dispatch.take_fresh(0, 1, 37):
            batches.append(batch)
            await asyncio.sleep(0)
        return batches

    batches = [b for part in await asyncio.gather(*(deliverer() for _ in range(TAKERS))) for b in part]
    handed = [d for b in batches for d in b]
    counts = collections.Counter(d.event_id for d in handed)
    assert set(counts) == owed and max(counts.values()) == 1, "each delivery handed out exactly once"
    by_id = {r.id: r for r in rows}
    for batch in batches:
        assert [d.event_seq for d in batch] == sorted(d.event_seq for d in batch)
    for d in handed:
        event = by_id[d.event_id]
        assert d.order_key == event.conversation_id and d.customer_id == customer["id"]
        assert d.data == event.data and d.event_time is not None and d.attempts == 0
    assert await WebhookDelivery.count().where(WebhookDelivery.fresh.eq(True)) == 0
    # The shards' partition: bucket modulo shards, each delivery in exactly one shard.
    await WebhookDelivery.update({WebhookDelivery.fresh: True}).where(WebhookDelivery.fresh.eq(False))
    per_shard = [await dispatch.take_fresh(s, 4, EVENTS) for s in range(4)]
    assert sorted(d.event_id for part in per_shard for d in part) == sorted(owed)
    assert all(dispatch.bucket_of(d.order_key) % 4 == s for s, part in enumerate(per_shard) for d in part)

    # Delivered outcomes stored together, each with its own attempts and status code.
    first, second = handed[0], handed[1]
    await dispatch.record_delivered_many([(first.id, 1, 200), (second.id, 3, 204)])
    # A lane's page: its key's pending deliveries after a seq, in event order, with their events' data
    # (the delivered ones no longer among them).
    key = first.order_key
    of_key = sorted((d for d in handed if d.order_key == key), key=lambda d: d.event_seq)
    after = of_key[0].event_seq - 1
    page = await dispatch.pending_for_key(key, after, 5)
    expected = [d for d in of_key if d.id not in (first.id, second.id) and d.event_seq > after][:5]
    assert [d.id for d in page] == [d.id for d in expected] and len(page) == 5
    for d in page:
        event = by_id[d.event_id]
        assert d.data == event.data and d.event_time is not None and d.customer_id == customer["id"]
        assert (d.event_type, d.attempts) == (event.type, 0)
    later = await dispatch.pending_for_key(key, page[-1].event_seq, 1000)
    assert [d.id for d in later] == [d.id for d in of_key if d.event_seq > page[-1].event_seq]
    stored = {
        r["id"]: r
        for r in await WebhookDelivery.select().where(WebhookDelivery.id.is_in([first.id, second.id]))
    }
    for delivery, attempts, code in ((first, 1, 200), (second, 3, 204)):
        row = stored[delivery.id]
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("delivered", attempts, code)
        assert row["tm_delivered"] is not None and row["next_attempt_at"] is None
