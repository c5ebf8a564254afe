"""Agents' token version: a password change bumps it and so ends the tokens issued before."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-01T10:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "agent token version"


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    # Existing agents get version 0, the version every token issued before this migration
    # implies: their tokens stay valid until the password next changes.
    manager.add_column(
        table_class_name="Agent",
        tablename="agents",
        column_name="token_version",
        db_column_name="token_version",
        column_class_name="Integer",
        column_class=Integer,
        params={
            "default": 0,
            "null": False,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    return manager
