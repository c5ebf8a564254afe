"""Indexes of activeflows: per conversation, per customer page, unstarted runs for recovery."""

from hub.db import raw_sql_migration

ID = "2026-11-25T12:30:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "activeflow indexes"

STATEMENTS = [
    "CREATE INDEX activeflows_conversation ON activeflows (conversation_id, tm_create, id)",
    "CREATE INDEX activeflows_customer_page ON activeflows (customer_id, tm_create, id)",
    "CREATE INDEX activeflows_unstarted ON activeflows (started, status)",
    "CREATE INDEX activeflows_message ON activeflows (message_id)",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
