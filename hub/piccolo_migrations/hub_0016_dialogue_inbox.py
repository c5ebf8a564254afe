"""Dialogues (flows waiting for replies): `activeflows.in_dialogue` (at most one run per conversation)
and `dialogue_messages`, the inbox of inbound messages routed to a run, in commit order."""

from hub.db import raw_sql_migration

ID = "2026-12-03T10:16:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "dialogue inbox"

# Plain SQL that PostgreSQL and SQLite both take; existing runs are not in dialogue.
STATEMENTS = [
    "ALTER TABLE activeflows ADD COLUMN in_dialogue BOOLEAN NOT NULL DEFAULT false",
    # Inbound routing: the run in dialogue of a conversation.
    "CREATE INDEX activeflows_in_dialogue ON activeflows (conversation_id) WHERE in_dialogue",
    "CREATE TABLE dialogue_messages (id UUID PRIMARY KEY, customer_id UUID NOT NULL, "
    "activeflow_id UUID NOT NULL, conversation_id UUID NOT NULL, message_id UUID NOT NULL, "
    "position INTEGER NOT NULL, state VARCHAR(16) NOT NULL DEFAULT 'routed', "
    "delivered BOOLEAN NOT NULL DEFAULT false, tm_create TIMESTAMPTZ, tm_update TIMESTAMPTZ)",
    # A message feeds at most one run; a run's inbox positions are 1, 2, 3... in commit order.
    "CREATE UNIQUE INDEX dialogue_messages_once ON dialogue_messages (message_id)",
    "CREATE UNIQUE INDEX dialogue_messages_order ON dialogue_messages (activeflow_id, position)",
    # Recovery: routed messages whose signal was never confirmed.
    "CREATE INDEX dialogue_messages_undelivered ON dialogue_messages (tm_create) WHERE NOT delivered",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
