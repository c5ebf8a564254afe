"""One message per (customer, Idempotency-Key): a retried POST returns the first message."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-25T12:00:01:000000"
VERSION = "1.38.0"
DESCRIPTION = "unique idempotency key per customer"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def create_index():
        await engine_finder().run_ddl(
            "CREATE UNIQUE INDEX messages_idempotency_key ON messages (customer_id, idempotency_key)"
        )

    manager.add_raw(create_index)
    return manager
