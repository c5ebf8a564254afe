"""Version 1 of every existing flow, and the unique index runs look their version up by."""

from hub.db import raw_sql_migration

ID = "2026-12-01T10:08:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "flow version rows"

# Piccolo runs raw steps before table changes, hence a migration of its own after 0008.
STATEMENTS = [
    "INSERT INTO flow_versions (flow_id, version, actions, tm_create) "
    "SELECT id, version, actions, tm_update FROM flows",
    "CREATE UNIQUE INDEX flow_versions_flow_version ON flow_versions (flow_id, version)",
]


async def forwards():
    return raw_sql_migration(ID, DESCRIPTION, STATEMENTS)
