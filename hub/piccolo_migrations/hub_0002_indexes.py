"""Room-key uniqueness, provider message dedupe and the indexes behind keyset pagination."""

from hub.db import raw_sql_migration

ID = "2026-11-25T11:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "room key, dedupe and pagination indexes"

# Both PostgreSQL and SQLite (>= 3.8) support partial unique indexes with this syntax.
STATEMENTS = [
    # One live conversation per room key; deleted ones never match.
    "CREATE UNIQUE INDEX conversations_room_key ON conversations "
    "(customer_id, account_id, type, self_target, peer_target) WHERE tm_delete IS NULL",
    "CREATE INDEX conversations_customer_page ON conversations (customer_id, tm_create, id)",
    "CREATE INDEX conversations_owner_page ON conversations (customer_id, owner_id, tm_create, id)",
    # A provider retry of the same message id stores nothing new.
    "CREATE UNIQUE INDEX messages_provider_id ON messages (account_id, provider_message_id)",
    "CREATE INDEX messages_conversation_page ON messages (conversation_id, tm_create, id)",
    "CREATE INDEX contact_addresses_lookup ON contact_addresses (customer_id, type, target)",
    "CREATE INDEX events_customer_seq ON events (customer_id, seq)",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
