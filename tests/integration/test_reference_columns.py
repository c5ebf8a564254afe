"""Reference columns have no default (issue 14, item 11): an insert that forgets `customer_id`
fails on both engines, and migration 0011 changes a populated database without losing a row."""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards

from hub import db, piccolo_migrations
from hub.inbound import store_inbound
from hub.tables import Account, Contact
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database
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


TABLES_THEN = ("customers", "agents", "accounts", "conversations", "messages", "events", "flows")


async def _populate_as_then() -> dict[str, uuid.UUID]:
    """Rows written with the columns the schema had before 0011 (later migrations add columns the
    current code writes, so the code of today cannot write them here)."""
    ids = {name: uuid.uuid4() for name in ("customer", "second", "agent", "account", "conversation", "flow")}
    stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    peer = '{"type": "tel", "target": "+14155551234", "target_name": "", "name": "", "detail": ""}'
    me = '{"type": "tel", "target": "+15550001000", "target_name": "", "name": "Main line", "detail": ""}'
    statements = [
        ("INSERT INTO customers (id, name, tm_create, tm_update) VALUES ({}, {}, {}, {})",
         [ids["customer"], "kept", stamp, stamp]),
        ("INSERT INTO customers (id, name, tm_create, tm_update) VALUES ({}, {}, {}, {})",
         [ids["second"], "second", stamp, stamp]),
        ("INSERT INTO agents (id, customer_id, username, password_hash, permission, tm_create, tm_update) "
         "VALUES ({}, {}, {}, {}, 32, {}, {})",
         [ids["agent"], ids["customer"], f"kept-{ids['agent'].hex[:8]}", "x", stamp, stamp]),
        ("INSERT INTO accounts (id, customer_id, type, name, number, sid, token, tm_create, tm_update) "
         "VALUES ({}, {}, 'sms', 'Main line', '+15550001000', {}, 'token', {}, {})",
         [ids["account"], ids["customer"], "AC" + "0" * 32, stamp, stamp]),
        ("INSERT INTO conversations (id, customer_id, account_id, type, name, detail, owner_type, owner_id, "
         "self_target, peer_target, self_address, peer_address, tm_create, tm_update) "
         "VALUES ({}, {}, {}, 'message', {}, 'SMS conversation', '', {}, '+15550001000', '+14155551234', "
         "{}, {}, {}, {})",
         [ids["conversation"], ids["customer"], ids["account"], "SMS \u00b7 +14155551234",
          uuid.UUID(int=0), me, peer, stamp, stamp]),
        ("INSERT INTO messages (id, customer_id, conversation_id, account_id, direction, status, source, "
         "destination, text, provider_message_id, tm_create, tm_update) "
         "VALUES ({}, {}, {}, {}, 'incoming', 'done', {}, {}, 'kept', 'SMkept', {}, {})",
         [uuid.uuid4(), ids["customer"], ids["conversation"], ids["account"], peer, me, stamp, stamp]),
        ("INSERT INTO events (id, customer_id, conversation_id, type, data, tm_create) "
         "VALUES ({}, {}, {}, 'conversation_created', {}, {})",
         [uuid.uuid4(), ids["customer"], ids["conversation"], "{}", stamp]),
        ("INSERT INTO flows (id, customer_id, name, actions, tm_create, tm_update) "
         "VALUES ({}, {}, 'kept', '[]', {}, {})",
         [ids["flow"], ids["customer"], stamp, stamp]),
    ]
    for sql, values in statements:
        await Contact.raw(sql, *values)
    return ids


async def _snapshot(engine, columns: dict[str, list[str]] | None = None) -> dict[str, list]:
    """Every row of the tables of then, in the columns they had then, but for the outbox's
    `relayed_at`: the session's webhook relay (tables are bound globally) may relay this
    database's events while the test runs."""
    snapshot = {}
    for table in TABLES_THEN:
        rows = await engine.run_ddl(f'SELECT * FROM "{table}"')
        keep = columns[table] if columns else sorted(rows[0].keys()) if rows else []
        snapshot[table] = sorted(repr({k: str(r[k]) for k in keep if k != "relayed_at"}) for r in rows)
        if columns is None:
            snapshot.setdefault("_columns", {})[table] = keep
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
            # Before: a forgotten customer_id silently got a value (PostgreSQL a random UUID,
            # SQLite the text 'None').
            await _insert_without_customer(engine)
            assert await Contact.count() == 1
            await Contact.delete(force=True)

            ids = await _populate_as_then()
            before = await _snapshot(engine)
            columns = before.pop("_columns")
            assert all(before[name] for name in ("agents", "accounts", "conversations", "messages", "events"))
            await db.migrate(engine)
            assert await _snapshot(engine, columns) == before

            with pytest.raises(Exception, match="(?i)not null|null value"):
                await _insert_without_customer(engine)
            # Piccolo refuses before the database sees it; the NOT NULL above is the last line.
            with pytest.raises(ValueError, match="customer_id wasn't provided"):
                await Account.insert(Account(id=uuid.uuid4(), type="line"))
            # The rebuilt tables keep their indexes: room matching (over participants since 0013)
            # and the provider-id dedupe.
            account = await Account.select().where(Account.id == ids["account"]).first()
            duplicate = await store_inbound(inbound(account, provider_message_id="SMkept"))
            assert duplicate.duplicate
            again = await store_inbound(inbound(account, text="after"))
            assert not again.duplicate and again.conversation["id"] == ids["conversation"]
        finally:
            db.use_engine(pg_engine)
