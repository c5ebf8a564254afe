"""Migration 0009 (webhook endpoint state, previous owner of events) on a populated database, on
PostgreSQL and SQLite. Each run is a subprocess: binding the tables to a half-migrated database in
the test process would hand it to the session's webhook relay running in the background."""

from __future__ import annotations

import asyncio
import importlib
import os
import pkgutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[2]
OURS = "2026-12-01T10:09:00:000000"


def migration_before_ours() -> str:
    import hub.piccolo_migrations as package

    ids = [
        importlib.import_module(f"{package.__name__}.{m.name}").ID
        for m in pkgutil.iter_modules(package.__path__)
    ]
    return max(i for i in ids if i < OURS)


async def scenario(url: str) -> None:
    """Migrates up to the migration before 0009, writes rows as the code of then did, migrates on
    and checks the rows kept their data and got the new columns' defaults, then uses them."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from hub import db, events, webhooks
    from hub.tables import Customer, Event, WebhookDelivery

    engine = await db.open_engine(url)
    db.use_engine(engine)
    await db.start(engine, pool_size=2)
    try:
        result = await run_forwards(app_name="hub", migration_id=migration_before_ours())
        assert result.success, result.message
        assert not await Event.raw("SELECT * FROM events"), "a fresh database"
        customer_id, event_id, owner_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        await Customer.raw(
            "INSERT INTO customers (id, name, webhook_uri, webhook_method, webhook_secret, "
            "webhook_secret_previous, webhook_secret_previous_until, tm_create, tm_update, tm_delete) "
            "VALUES ({}, {}, {}, {}, {}, {}, NULL, {}, {}, NULL)",
            customer_id,
            "before 0009",
            "https://example.com/hook",
            "POST",
            webhooks.new_secret(),
            "",
            stamp,
            stamp,
        )
        await Event.raw(
            "INSERT INTO events (id, customer_id, conversation_id, owner_id, type, data, tm_create, "
            "relayed_at) VALUES ({}, {}, NULL, {}, {}, {}, {}, {})",
            event_id,
            customer_id,
            owner_id,
            events.CONVERSATION_UPDATED,
            '{"id": "kept"}',
            stamp,
            stamp,
        )
        await db.migrate(engine)

        customer = await Customer.select().where(Customer.id == customer_id).first()
        assert customer["name"] == "before 0009" and customer["webhook_uri"] == "https://example.com/hook"
        assert customer["webhook_disabled_at"] is None and customer["webhook_disabled_reason"] == ""
        event = await Event.select().where(Event.id == event_id).first()
        assert event["owner_id"] == owner_id and event["data"] == '{"id": "kept"}'
        assert event["previous_owner_id"] is None and event["tm_create"] == stamp

        # The new columns work on this engine.
        assert await webhooks.disable_endpoint(customer_id, "https://example.com/hook", "answered 410: bye")
        disabled = (await webhooks.endpoints([customer_id]))[customer_id]
        assert disabled.disabled_reason == "answered 410: bye"
        assert await WebhookDelivery.count() == 0
        async with db.transaction(engine):
            new_owner = uuid.uuid4()
            moved = events.event_row(
                events.CONVERSATION_UPDATED, customer_id, {}, owner_id=new_owner, previous_owner_id=owner_id
            )
            await events.emit(moved)
        rows = await events.list_events(customer_id, 0, 10, owner_id=owner_id)
        assert [r["previous_owner_id"] for r in rows] == [None, owner_id]
    finally:
        await db.stop(engine)


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0009_keeps_data_and_adds_the_columns(engine, tmp_path):
    async def create_database() -> tuple[str, str]:
        name = f"hub_mig_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name, f"{PG_ADMIN_DSN.rpartition('/')[0]}/{name}"

    async def drop_database(name: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    name = ""
    if engine == "postgres":
        name, url = asyncio.run(create_database())
    else:
        url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.test_migration_0009", url],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        if name:
            asyncio.run(drop_database(name))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "migration 0009 checked" in done.stdout


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print("migration 0009 checked", flush=True)
