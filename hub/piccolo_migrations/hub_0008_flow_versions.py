"""Flow versions: every action list a flow had, the version a run executes, recovery's start
attempts per run (backfill and indexes: 0008b)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID, Integer, Serial, Text, Timestamptz
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.columns.defaults.uuid import UUID4
from piccolo.columns.indexes import IndexMethod

ID = "2026-12-01T10:08:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "flow versions"


def params(**values) -> dict:
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **values,
    }


COLUMNS = [
    # (table class, table, column, column class, params)
    ("FlowVersion", "flow_versions", "id", Serial, params(primary_key=True)),
    ("FlowVersion", "flow_versions", "flow_id", UUID, params(default=UUID4())),
    ("FlowVersion", "flow_versions", "version", Integer, params(default=1)),
    ("FlowVersion", "flow_versions", "actions", Text, params(default="[]")),
    ("FlowVersion", "flow_versions", "tm_create", Timestamptz, params(default=TimestamptzNow())),
    # Existing flows are version 1 (0008b copies their actions into flow_versions).
    ("Flow", "flows", "version", Integer, params(default=1)),
    # Existing runs are version 0: they keep executing the actions copied into their row.
    ("Activeflow", "activeflows", "flow_version", Integer, params(default=0)),
    ("Activeflow", "activeflows", "start_attempts", Integer, params(default=0)),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)
    manager.add_table(class_name="FlowVersion", tablename="flow_versions", schema=None, columns=None)
    for table_class, table, column, column_class, column_params in COLUMNS:
        manager.add_column(
            table_class_name=table_class,
            tablename=table,
            column_name=column,
            db_column_name=column,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=column_params,
            schema=None,
        )
    return manager
