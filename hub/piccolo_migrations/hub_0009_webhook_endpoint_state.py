"""A customer's webhook endpoint can be disabled (410 Gone); outbox events remember the previous owner."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID, Text, Timestamptz
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-01T10:09:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "webhook endpoint state, previous owner of events"


def _params(**given):
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **given,
    }


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)
    columns = [
        ("Customer", "customers", "webhook_disabled_at", Timestamptz, _params(default=None, null=True)),
        ("Customer", "customers", "webhook_disabled_reason", Text, _params(default="")),
        ("Event", "events", "previous_owner_id", UUID, _params(default=None, null=True)),
    ]
    for class_name, tablename, column_name, column_class, params in columns:
        manager.add_column(
            table_class_name=class_name,
            tablename=tablename,
            column_name=column_name,
            db_column_name=column_name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
