"""Sub-flows: an activeflow started by another one's `flow_start` records its parent run (NULL for
every existing run and every run a message started)."""

from hub.db import raw_sql_migration

ID = "2026-12-03T10:17:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "activeflow parent"

# Plain SQL that PostgreSQL and SQLite both take; existing runs keep every value.
STATEMENTS = [
    "ALTER TABLE activeflows ADD COLUMN parent_id UUID",
    "CREATE INDEX activeflows_parent ON activeflows (parent_id) WHERE parent_id IS NOT NULL",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
