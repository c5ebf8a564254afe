"""Indexes of webhook deliveries and of unrelayed events; events older than the relay count as relayed."""

from hub.db import raw_sql_migration

ID = "2026-11-25T13:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "webhook delivery indexes"

# Piccolo runs raw steps before table changes, hence a migration of its own after 0006.
# Both PostgreSQL and SQLite (>= 3.8) support partial indexes with this syntax.
STATEMENTS = [
    # Events written before the relay existed are history, not news: nobody is owed them.
    "UPDATE events SET relayed_at = tm_create WHERE relayed_at IS NULL",
    # The relay's queue: tiny, because rows leave it as soon as they are relayed.
    "CREATE INDEX events_unrelayed ON events (seq) WHERE relayed_at IS NULL",
    # Each shard's inbox of new and replayed deliveries.
    "CREATE INDEX webhook_deliveries_fresh ON webhook_deliveries (bucket, event_seq) WHERE fresh",
    # Heads of the per-conversation queues.
    "CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (bucket, order_key, event_seq) "
    "WHERE status = 'pending'",
    "CREATE INDEX webhook_deliveries_customer_page ON webhook_deliveries (customer_id, tm_create, id)",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
