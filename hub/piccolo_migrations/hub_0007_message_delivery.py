"""Messages gain the provider's delivery status and time, their raw content type and all provider ids."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Text, Timestamptz, Varchar
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-01T10:07:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message delivery status, content type, provider ids"


def _params(**overrides):
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **overrides,
    }


COLUMNS = [
    ("delivery_status", Varchar, _params(length=16, default="")),
    ("tm_delivered", Timestamptz, _params(default=None, null=True)),
    ("content_type", Varchar, _params(length=32, default="")),
    ("provider_message_ids", Text, _params(default="[]")),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)
    for name, column_class, params in COLUMNS:
        manager.add_column(
            table_class_name="Message",
            tablename="messages",
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
