"""Indexes of activeflows: per conversation, per customer page, unstarted runs for recovery."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

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
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def create_indexes():
        engine = engine_finder()
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(create_indexes)
    return manager
