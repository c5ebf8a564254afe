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

from hub import agents, db, flows, piccolo_migrations
from hub.actions import ActionIn
from hub.inbound import store_inbound
from hub.tables import TABLES, Account, Contact
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database, make_tenant, schema_columns, tables_limited_to
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


async def _snapshot(tables: dict[str, set[str]]) -> dict[str, list]:
    """Every row of every table of then (`tables`: their columns before 0011), but for the
    outbox's `relayed_at`: the session's webhook relay (tables are bound globally) may relay this
    database's events while the test runs."""
    snapshot = {}
    for table in [t for t in TABLES if t._meta.tablename in tables]:
        rows = await table.select()
        if table._meta.tablename == "events":
            rows = [{k: v for k, v in row.items() if k != "relayed_at"} for row in rows]
        snapshot[table._meta.tablename] = sorted(map(repr, rows))
    return snapshot


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_migration_0011_keeps_data_and_inserts_must_name_their_tenant(kind, pg_engine):
    async with fresh_engine(kind) as engine:
        try:
            db.use_engine(engine)
            with contextlib.redirect_stdout(io.StringIO()):
                result = await run_forwards(app_name="hub", migration_id=_previous_migration_id())
            assert result.success, result.message
            await db.start(engine)
            # Today's code writes rows as the schema of then holds them (later migrations add columns).
            then = await schema_columns(engine)
            with tables_limited_to(then):
                # Before: a forgotten customer_id silently got a value (PostgreSQL a random UUID,
                # SQLite the text 'None').
                await _insert_without_customer(engine)
                assert await Contact.count() == 1
                await Contact.delete(force=True)

                tenant = await make_tenant()
                await agents.create_customer("second")
                first = await store_inbound(
                    inbound(tenant.account, text="kept", provider_message_id="SMkept")
                )
                await flows.create_flow(
                    tenant.customer_id,
                    "kept",
                    "",
                    [ActionIn(id="a", type="conversation_send", option={"text": "hi"})],
                )
                before = await _snapshot(then)
                assert all(
                    before[name] for name in ("agents", "accounts", "conversations", "messages", "events")
                )
            await db.migrate(engine)
            with tables_limited_to(then):
                assert await _snapshot(then) == before

            with pytest.raises(Exception, match="(?i)not null|null value"):
                await _insert_without_customer(engine)
            # Piccolo refuses before the database sees it; the NOT NULL above is the last line.
            with pytest.raises(ValueError, match="customer_id wasn't provided"):
                await Account.insert(Account(id=uuid.uuid4(), type="line"))
            # The rebuilt tables keep their indexes: the room key and the provider-id dedupe.
            duplicate = await store_inbound(inbound(tenant.account, provider_message_id="SMkept"))
            assert duplicate.duplicate
            again = await store_inbound(inbound(tenant.account, text="after"))
            assert not again.duplicate and again.conversation["id"] == first.conversation["id"]
        finally:
            db.use_engine(pg_engine)
