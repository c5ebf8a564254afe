"""One message per (customer, Idempotency-Key): a retried POST returns the first message."""

from hub.db import raw_sql_migration

ID = "2026-11-25T12:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique idempotency key per customer"


STATEMENTS = ["CREATE UNIQUE INDEX messages_idempotency_key ON messages (customer_id, idempotency_key)"]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
