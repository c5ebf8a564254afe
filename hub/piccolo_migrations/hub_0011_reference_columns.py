"""Reference columns (customer_id, conversation_id, ...) lose their random-UUID default: an insert
that forgets one fails instead of landing in a random tenant.

PostgreSQL had `DEFAULT gen_random_uuid()` on them: dropped. SQLite had `NOT NULL DEFAULT None`,
which SQLite reads as the string 'None' (an insert without the column stored 'None'); SQLite cannot
alter a column, so each table is rebuilt without that default (SQLite's documented procedure:
create the new table, copy the rows, drop the old one, rename, re-create its indexes)."""

import re

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.engine.sqlite import SQLiteEngine

ID = "2026-12-01T10:11:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "reference columns without defaults"

REFERENCES = {
    "agents": ["customer_id"],
    "contacts": ["customer_id"],
    "contact_addresses": ["contact_id", "customer_id"],
    "accounts": ["customer_id"],
    "conversations": ["customer_id", "account_id"],
    "messages": ["customer_id", "conversation_id", "account_id"],
    "flows": ["customer_id"],
    "activeflows": ["customer_id", "flow_id", "conversation_id", "account_id"],
    "events": ["customer_id"],
    "webhook_deliveries": ["customer_id", "event_id", "order_key"],
}


async def _postgres(engine) -> None:
    for table, columns in REFERENCES.items():
        changes = ", ".join(f'ALTER COLUMN "{c}" DROP DEFAULT, ALTER COLUMN "{c}" SET NOT NULL' for c in columns)
        await engine.run_ddl(f'ALTER TABLE "{table}" {changes}')


def _without_defaults(create_sql: str, table: str, columns: list[str]) -> str:
    for column in columns:
        pattern = rf'("{column}" UUID\b[^,]*?) DEFAULT None\b'
        create_sql, found = re.subn(pattern, r"\1", create_sql)
        if not found and not re.search(rf'"{column}" UUID [^,]*NOT NULL', create_sql):
            raise RuntimeError(f"{table}.{column}: unexpected definition in {create_sql!r}")
        if "NOT NULL" not in re.search(rf'"{column}" UUID[^,]*', create_sql).group(0):
            create_sql = re.sub(rf'("{column}" UUID)\b', r"\1 NOT NULL", create_sql, count=1)
    return create_sql


async def _sqlite(engine) -> None:
    for table, columns in REFERENCES.items():
        [row] = await engine.run_ddl(f"SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'")
        new_sql = _without_defaults(row["sql"], table, columns)
        if new_sql == row["sql"]:
            continue
        indexes = await engine.run_ddl(
            f"SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND sql IS NOT NULL"
        )
        staging = f"{table}__0011"
        await engine.run_ddl(new_sql.replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "{staging}"', 1))
        await engine.run_ddl(f'INSERT INTO "{staging}" SELECT * FROM "{table}"')
        await engine.run_ddl(f'DROP TABLE "{table}"')
        await engine.run_ddl(f'ALTER TABLE "{staging}" RENAME TO "{table}"')
        for index in indexes:
            await engine.run_ddl(index["sql"])


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        await (_sqlite(engine) if isinstance(engine, SQLiteEngine) else _postgres(engine))

    manager.add_raw(run)
    return manager
