"""The outbox relay (events -> live stream and webhook queue) and the delivery shards' queue queries.

The relay marks events `relayed_at` instead of following a `seq` cursor: a transaction that took
its `seq` early but commits late is picked up by the next batch instead of being skipped."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from piccolo.columns.combination import WhereRaw
from piccolo.engine.postgres import PostgresEngine

from hub import webhooks
from hub.db import current_engine, transaction
from hub.repo import now
from hub.tables import Event, WebhookDelivery

BUCKETS = 1024

_RELAY_COLUMNS = (
    Event.seq,
    Event.id,
    Event.customer_id,
    Event.conversation_id,
    Event.owner_id,
    Event.previous_owner_id,
    Event.type,
    Event.data,
    Event.tm_create,
)


@dataclass
class QueuedDelivery:
    """A pending delivery with what its attempt needs; `data` is the event's JSON."""

    id: UUID
    customer_id: UUID
    event_id: UUID
    event_seq: int
    event_type: str
    order_key: UUID
    attempts: int
    next_attempt_at: datetime | None
    data: str = "{}"
    # When the event happened: the body's `timestamp`.
    event_time: datetime | None = None


@dataclass
class Head:
    """The earliest pending delivery of one order key, and when it may be attempted."""

    order_key: UUID
    event_seq: int
    next_attempt_at: datetime | None


def bucket_of(order_key: UUID) -> int:
    return order_key.int % BUCKETS


def _pg_pool():
    """The pool, for a lone statement on PostgreSQL outside any transaction; None otherwise."""
    engine = current_engine()
    if (
        isinstance(engine, PostgresEngine)
        and engine.pool is not None
        and engine.current_transaction.get() is None
    ):
        return engine.pool
    return None


def _in_shard(shard: int, shards: int) -> WhereRaw:
    return WhereRaw("bucket % {} = {}", shards, shard)


def _locked(query):
    """Row locks on PostgreSQL so a second relay or shard skips what this one took; SQLite's write
    transaction already excludes everyone else."""
    if isinstance(current_engine(), PostgresEngine):
        return query.lock_rows("UPDATE", skip_locked=True)
    return query


async def relay_batch(limit: int) -> list[dict[str, Any]]:
    """Takes up to `limit` unrelayed events in `seq` order, marks them relayed and queues a delivery
    for each whose customer has a webhook, in one transaction. Returns the events."""
    # A read first: an idle relay must not take SQLite's write lock several times a second (nor
    # open a transaction on PostgreSQL: three round trips instead of one).
    if (pool := _pg_pool()) is not None:
        async with pool.acquire() as conn:
            if not await conn.fetchval(_RELAY_ANY):
                return []
    elif not await Event.exists().where(Event.relayed_at.is_null()):
        return []
    engine = current_engine()
    async with transaction(engine) as txn:
        if isinstance(engine, PostgresEngine):
            return await _relay_batch_pg(txn.connection, limit)
        rows = await _locked(
            Event.select(*_RELAY_COLUMNS).where(Event.relayed_at.is_null()).order_by(Event.seq).limit(limit)
        )
        if not rows:
            return []
        stamp = now()
        await Event.update({Event.relayed_at: stamp}).where(Event.seq.is_in([r["seq"] for r in rows]))
        targets = await webhooks.endpoints([r["customer_id"] for r in rows])
        # A disabled endpoint (410 Gone) is owed nothing until it is enabled again, like none at all.
        enabled = {c for c, endpoint in targets.items() if not endpoint.disabled_reason}
        deliveries = [_delivery(row, stamp) for row in rows if row["customer_id"] in enabled]
        if deliveries:
            await WebhookDelivery.insert(*deliveries).on_conflict(action="DO NOTHING")
    return rows


_RELAY_ANY = "SELECT EXISTS (SELECT 1 FROM events WHERE relayed_at IS NULL)"
_RELAY_TAKE = f"""
SELECT {", ".join(c._meta.db_column_name for c in _RELAY_COLUMNS)} FROM events
WHERE relayed_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_RELAY_MARK = "UPDATE events SET relayed_at = $1 WHERE seq = ANY($2::integer[])"
_RELAY_QUEUE = f"""
INSERT INTO webhook_deliveries (id, customer_id, event_id, event_seq, event_type, conversation_id,
    order_key, bucket, status, fresh, attempts, last_error, next_attempt_at, tm_create, tm_update)
SELECT gen_random_uuid(), d.customer_id, d.event_id, d.event_seq, d.event_type, d.conversation_id,
    d.order_key, d.bucket, '{webhooks.PENDING}', true, 0, '', $8, $8, $8
FROM unnest($1::uuid[], $2::uuid[], $3::integer[], $4::text[], $5::uuid[], $6::uuid[], $7::integer[])
    AS d(customer_id, event_id, event_seq, event_type, conversation_id, order_key, bucket)
ON CONFLICT DO NOTHING
"""


async def _relay_batch_pg(conn, limit: int) -> list[dict[str, Any]]:
    """relay_batch on PostgreSQL: the same three steps as plain asyncpg statements on the
    transaction's connection (Piccolo building a 1,000-row insert cost most of the relay's CPU)."""
    rows = [dict(r) for r in await conn.fetch(_RELAY_TAKE, limit)]
    if not rows:
        return []
    stamp = now()
    await conn.execute(_RELAY_MARK, stamp, [r["seq"] for r in rows])
    targets = await webhooks.endpoints([r["customer_id"] for r in rows])
    enabled = {c for c, endpoint in targets.items() if not endpoint.disabled_reason}
    queued = [r for r in rows if r["customer_id"] in enabled]
    if queued:
        keys = [r["conversation_id"] or r["id"] for r in queued]
        await conn.execute(
            _RELAY_QUEUE,
            [r["customer_id"] for r in queued],
            [r["id"] for r in queued],
            [r["seq"] for r in queued],
            [r["type"] for r in queued],
            [r["conversation_id"] for r in queued],
            keys,
            [bucket_of(k) for k in keys],
            stamp,
        )
    return rows


def _delivery(event: dict[str, Any], stamp: datetime) -> WebhookDelivery:
    order_key = event["conversation_id"] or event["id"]
    return WebhookDelivery(
        id=uuid.uuid4(),
        customer_id=event["customer_id"],
        event_id=event["id"],
        event_seq=event["seq"],
        event_type=event["type"],
        conversation_id=event["conversation_id"],
        order_key=order_key,
        bucket=bucket_of(order_key),
        status=webhooks.PENDING,
        fresh=True,
        attempts=0,
        next_attempt_at=stamp,
        tm_create=stamp,
        tm_update=stamp,
    )


_QUEUE_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.customer_id,
    WebhookDelivery.event_id,
    WebhookDelivery.event_seq,
    WebhookDelivery.event_type,
    WebhookDelivery.order_key,
    WebhookDelivery.attempts,
    WebhookDelivery.next_attempt_at,
    WebhookDelivery.status,
)


async def _with_data(rows: list[dict[str, Any]]) -> list[QueuedDelivery]:
    if not rows:
        return []
    seqs = [r["event_seq"] for r in rows]
    events = {
        e["seq"]: e
        for e in await Event.select(Event.seq, Event.data, Event.tm_create).where(Event.seq.is_in(seqs))
    }
    none: dict[str, Any] = {}
    return _queued(
        [
            {
                **r,
                "data": events.get(r["event_seq"], none).get("data"),
                "event_time": events.get(r["event_seq"], none).get("tm_create"),
            }
            for r in rows
        ]
    )


# take_fresh on PostgreSQL: taken, marked and read with its event in one statement (atomic by
# itself; the row locks let a second shard or worker skip what this one took).
_TAKE_FRESH_PG = f"""
WITH taken AS (
    SELECT id FROM webhook_deliveries WHERE fresh AND bucket % $1 = $2
    ORDER BY event_seq LIMIT $3 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE webhook_deliveries d SET fresh = false FROM taken WHERE d.id = taken.id
    RETURNING {", ".join("d." + c._meta.db_column_name for c in _QUEUE_COLUMNS)}
)
SELECT m.*, e.data, e.tm_create AS event_time FROM marked m LEFT JOIN events e ON e.seq = m.event_seq
WHERE m.status = '{webhooks.PENDING}' ORDER BY m.event_seq
"""


def _queued(rows: list[dict[str, Any]]) -> list[QueuedDelivery]:
    return [
        QueuedDelivery(
            id=r["id"],
            customer_id=r["customer_id"],
            event_id=r["event_id"],
            event_seq=r["event_seq"],
            event_type=r["event_type"],
            order_key=r["order_key"],
            attempts=r["attempts"],
            next_attempt_at=r["next_attempt_at"],
            data=r["data"] if r["data"] is not None else "{}",
            event_time=r["event_time"],
        )
        for r in rows
    ]


async def take_fresh(shard: int, shards: int, limit: int) -> list[QueuedDelivery]:
    """New and replayed deliveries of a shard, in event order; each is handed out once."""
    if (pool := _pg_pool()) is not None:
        async with pool.acquire() as conn:
            return _queued(await conn.fetch(_TAKE_FRESH_PG, shards, shard, limit))
    where = [WebhookDelivery.fresh.eq(True), _in_shard(shard, shards)]
    if not await WebhookDelivery.exists().where(*where):
        return []
    async with transaction(current_engine()):
        rows = await _locked(
            WebhookDelivery.select(*_QUEUE_COLUMNS)
            .where(*where)
            .order_by(WebhookDelivery.event_seq)
            .limit(limit)
        )
        if rows:
            await WebhookDelivery.update({WebhookDelivery.fresh: False}).where(
                WebhookDelivery.id.is_in([r["id"] for r in rows])
            )
    return await _with_data([r for r in rows if r["status"] == webhooks.PENDING])


_HEADS = """
SELECT d.order_key, d.event_seq, d.next_attempt_at FROM webhook_deliveries d
JOIN (
    SELECT order_key, MIN(event_seq) AS head_seq FROM webhook_deliveries
    WHERE status = 'pending' AND bucket % {} = {} GROUP BY order_key
) h ON d.order_key = h.order_key AND d.event_seq = h.head_seq
WHERE d.status = 'pending'
"""


async def pending_heads(shard: int, shards: int) -> list[Head]:
    """The head of every order key of the shard that has pending deliveries."""
    rows = await WebhookDelivery.raw(_HEADS, shards, shard)
    return [Head(r["order_key"], r["event_seq"], r["next_attempt_at"]) for r in rows]


_PENDING_FOR_KEY_PG = f"""
SELECT {", ".join("d." + c._meta.db_column_name for c in _QUEUE_COLUMNS)}, e.data, e.tm_create AS event_time
FROM webhook_deliveries d LEFT JOIN events e ON e.seq = d.event_seq
WHERE d.order_key = $1 AND d.status = '{webhooks.PENDING}' AND d.event_seq > $2
ORDER BY d.event_seq LIMIT $3
"""


async def pending_for_key(order_key: UUID, after_seq: int, limit: int) -> list[QueuedDelivery]:
    """Pending deliveries of one order key after `after_seq`, in event order."""
    if (pool := _pg_pool()) is not None:
        # One statement with the events' data (a lane reads a page per key; Piccolo's two queries
        # cost more than the statements themselves).
        async with pool.acquire() as conn:
            return _queued(await conn.fetch(_PENDING_FOR_KEY_PG, order_key, after_seq, limit))
    rows = (
        await WebhookDelivery.select(*_QUEUE_COLUMNS)
        .where(
            WebhookDelivery.order_key == order_key,
            WebhookDelivery.status == webhooks.PENDING,
            WebhookDelivery.event_seq > after_seq,
        )
        .order_by(WebhookDelivery.event_seq)
        .limit(limit)
    )
    return await _with_data(rows)


async def record_delivered(delivery_id: UUID, attempts: int, status_code: int) -> None:
    await record_delivered_many([(delivery_id, attempts, status_code)])


# record_delivered_many on PostgreSQL: the lot in one plain statement (no Piccolo query building).
_DELIVERED_PG = f"""
UPDATE webhook_deliveries w SET status = '{webhooks.DELIVERED}', attempts = o.attempts,
    last_status_code = o.status_code, last_error = '', next_attempt_at = NULL, tm_delivered = $4,
    tm_update = $4
FROM unnest($1::uuid[], $2::integer[], $3::integer[]) AS o(id, attempts, status_code)
WHERE w.id = o.id
"""


async def record_delivered_many(outcomes: list[tuple[UUID, int, int]]) -> None:
    """Delivered attempts, each `(delivery id, attempts, status code)`: on PostgreSQL one `UPDATE`;
    elsewhere one per distinct (attempts, status code), nearly always one for the lot."""
    if (pool := _pg_pool()) is not None:
        async with pool.acquire() as conn:
            await conn.execute(
                _DELIVERED_PG,
                [o[0] for o in outcomes],
                [o[1] for o in outcomes],
                [o[2] for o in outcomes],
                now(),
            )
        return
    groups: dict[tuple[int, int], list[UUID]] = {}
    for delivery_id, attempts, status_code in outcomes:
        groups.setdefault((attempts, status_code), []).append(delivery_id)
    stamp = now()
    for (attempts, status_code), ids in groups.items():
        await WebhookDelivery.update(
            {
                WebhookDelivery.status: webhooks.DELIVERED,
                WebhookDelivery.attempts: attempts,
                WebhookDelivery.last_status_code: status_code,
                WebhookDelivery.last_error: "",
                WebhookDelivery.next_attempt_at: None,
                WebhookDelivery.tm_delivered: stamp,
                WebhookDelivery.tm_update: stamp,
            }
        ).where(WebhookDelivery.id.is_in(ids))


async def record_failure(
    delivery_id: UUID, attempts: int, status_code: int | None, error: str, retry_in_s: float | None
) -> datetime | None:
    """A failed attempt: the next one is `retry_in_s` away, or (None) the delivery has failed.
    Returns when the next attempt is due."""
    stamp = now()
    next_at = stamp + timedelta(seconds=retry_in_s) if retry_in_s is not None else None
    await WebhookDelivery.update(
        {
            WebhookDelivery.status: webhooks.PENDING if next_at else webhooks.FAILED,
            WebhookDelivery.attempts: attempts,
            WebhookDelivery.last_status_code: status_code,
            WebhookDelivery.last_error: error[:1000],
            WebhookDelivery.next_attempt_at: next_at,
            WebhookDelivery.tm_update: stamp,
        }
    ).where(WebhookDelivery.id == delivery_id)
    return next_at
