"""Conversation tags: a JSON column for reading and a table of (customer, tag, conversation) for filters."""

from hub.db import raw_sql_migration

ID = "2026-12-01T10:14:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation tags"

# Plain SQL that PostgreSQL and SQLite both take; existing conversations get no tags.
STATEMENTS = [
    "ALTER TABLE conversations ADD COLUMN tags TEXT NOT NULL DEFAULT '[]'",
    "CREATE TABLE conversation_tags (id UUID PRIMARY KEY, customer_id UUID NOT NULL, "
    "conversation_id UUID NOT NULL, tag VARCHAR(50) NOT NULL)",
    "CREATE UNIQUE INDEX conversation_tags_once ON conversation_tags (conversation_id, tag)",
    "CREATE INDEX conversation_tags_filter ON conversation_tags (customer_id, tag, conversation_id)",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
