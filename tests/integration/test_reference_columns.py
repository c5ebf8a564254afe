"""Reference columns have no default (issue 14, item 11): an insert that forgets `customer_id`
fails on both engines, and migration 0011 changes a populated database without losing a row."""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import tempfile
import uuid
from pathlib import Path

import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards

from hub import db, piccolo_migrations
from hub.inbound import store_inbound
from hub.tables import Account
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database, make_tenant, populate_every_table, raw_snapshot, table_columns
from tests.integration.test_repository_engines import inbound

MIGRATION_0011 = "2026-12-01T10:11:00:000000"


def _previous_migration_id() -> str:
    ids = []
    for module in pkgutil.iter_modules(piccolo_migrations.__path__):
        ids.append(importlib.import_module(f"hub.piccolo_migrations.{module.name}").ID)
    return max(i for i in ids if i < MIGRATION_0011)


@contextlib.asynccontextmanager
async def fresh_engine(kind: str):
    """An empty database of `kind`, dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield await db.open_engine(f"sqlite:///{Path(tmp) / 'hub.sqlite'}")
        return
    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        engine = await db.open_engine(url)
        try:
            yield engine
        finally:
            await db.stop(engine)


async def _insert_without_customer(engine) -> None:
    await engine.run_ddl(f"INSERT INTO contacts (id, name) VALUES ('{uuid.uuid4()}', 'orphan')")


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_migration_0011_keeps_data_and_inserts_must_name_their_tenant(kind, pg_engine):
    async with fresh_engine(kind) as engine:
        try:
            db.use_engine(engine)
            with contextlib.redirect_stdout(io.StringIO()):
                result = await run_forwards(app_name="hub", migration_id=_previous_migration_id())
            assert result.success, result.message
            await db.start(engine)
            # Before: a forgotten customer_id silently got a value (PostgreSQL a random UUID,
            # SQLite the text 'None').
            await _insert_without_customer(engine)
            assert len(await engine.run_ddl("SELECT id FROM contacts")) == 1
            await engine.run_ddl("DELETE FROM contacts")

            # Rows in every column of every table, written by the schema of then (raw SQL: today's
            # table classes may have columns that do not exist yet at this migration).
            columns = await table_columns(engine)
            await populate_every_table(engine)
            before = await raw_snapshot(engine, columns)
            assert all(before[name] for name in ("agents", "accounts", "conversations", "messages", "events"))
            await db.migrate(engine)
            assert await raw_snapshot(engine, columns) == before

            with pytest.raises(Exception, match="(?i)not null|null value"):
                await _insert_without_customer(engine)
            # Piccolo refuses before the database sees it; the NOT NULL above is the last line.
            with pytest.raises(ValueError, match="customer_id wasn't provided"):
                await Account.insert(Account(id=uuid.uuid4(), type="line"))
            # The rebuilt tables keep their indexes: the room key and the provider-id dedupe.
            tenant = await make_tenant()
            first = await store_inbound(inbound(tenant.account, text="kept", provider_message_id="SMkept"))
            duplicate = await store_inbound(inbound(tenant.account, provider_message_id="SMkept"))
            assert duplicate.duplicate
            again = await store_inbound(inbound(tenant.account, text="after"))
            assert not again.duplicate and again.conversation["id"] == first.conversation["id"]
            unique = await engine.run_ddl(
                "SELECT count(*) AS n FROM messages WHERE provider_message_id = 'SMkept'"
            )
            assert unique[0]["n"] == 1
        finally:
            db.use_engine(pg_engine)
