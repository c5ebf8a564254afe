"""The tag filter in list order: `conversation_tags` gets its conversation's `tm_create` (the list's
order key, which never changes) and an index `(customer_id, tag, tm_create, conversation_id)`, so a
tagged list walks the tag's rows newest first instead of every conversation checking its tags.

Every existing tag row gets its conversation's `tm_create`; rows of no conversation (none are ever
written) would be listed by nothing and are dropped. The old `(customer_id, tag, conversation_id)`
index is a prefix of the new one's use and goes."""

from hub.db import raw_sql_migration

ID = "2026-12-03T10:19:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "tag list order"

# Plain SQL that PostgreSQL and SQLite both take.
STATEMENTS = [
    "ALTER TABLE conversation_tags ADD COLUMN tm_create TIMESTAMPTZ",
    "UPDATE conversation_tags SET tm_create = "
    "(SELECT c.tm_create FROM conversations c WHERE c.id = conversation_tags.conversation_id)",
    "DELETE FROM conversation_tags WHERE tm_create IS NULL",
    "CREATE INDEX conversation_tags_page ON conversation_tags (customer_id, tag, tm_create, conversation_id)",
    "DROP INDEX conversation_tags_filter",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
