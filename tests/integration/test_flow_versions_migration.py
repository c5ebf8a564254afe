"""Migration 0008 on a populated database, PostgreSQL and SQLite: existing flows become version 1,
existing runs keep the actions stored in their rows, and editing a migrated flow makes version 2."""

from __future__ import annotations

import contextlib
import importlib
import io
import pkgutil
import sqlite3
import tempfile
import uuid
from pathlib import Path

import asyncpg
import msgspec
import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards

from hub import activeflows, db, flows, piccolo_migrations
from hub.tables import Activeflow, Flow, FlowVersion
from tests.conftest import PG_ADMIN_DSN, _database_dsn

FIRST_OWN = "2026-12-01T10:08:00:000000"


def previous_migration_id() -> str:
    """The newest migration before 0008, whatever other migrations were merged meanwhile."""
    ids = [
        importlib.import_module(f"hub.piccolo_migrations.{m.name}").ID
        for m in pkgutil.iter_modules(piccolo_migrations.__path__)
    ]
    return max(i for i in ids if i < FIRST_OWN)


@contextlib.asynccontextmanager
async def scratch_engine(kind: str):
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield await db.open_engine(f"sqlite:///{Path(tmp) / 'hub.sqlite'}")
        return
    name = f"hub_migration_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield await db.open_engine(_database_dsn(name))
    finally:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_migration_keeps_flows_and_runs(kind, pg_engine):
    actions = [{"id": "say", "type": "conversation_send", "option": {"text": "old"}, "next_id": None}]
    run_actions = [
        {"id": "x", "type": "variable_set", "option": {"name": "a", "value": "1"}, "next_id": None}
    ]
    flow_id, customer_id, run_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with scratch_engine(kind) as engine:
        try:
            db.use_engine(engine)
            with contextlib.redirect_stdout(io.StringIO()):
                result = await run_forwards(app_name="hub", migration_id=previous_migration_id())
            assert result.success, result.message
            # Rows as the code before 0008 wrote them (only the columns that existed then).
            await engine.run_ddl(
                "INSERT INTO flows (id, customer_id, name, detail, actions, tm_create, tm_update) "
                f"VALUES ('{flow_id}', '{customer_id}', 'old flow', '', "
                f"'{msgspec.json.encode(actions).decode()}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
            await engine.run_ddl(
                "INSERT INTO activeflows (id, customer_id, flow_id, flow_name, conversation_id, account_id,"
                " workflow_id, actions, status, started, current_action_id, executed_actions, variables,"
                " reason, tm_create, tm_update) "
                f"VALUES ('{run_id}', '{customer_id}', '{flow_id}', 'old flow', '{uuid.uuid4()}',"
                f" '{uuid.uuid4()}', 'activeflow-{run_id}', '{msgspec.json.encode(run_actions).decode()}',"
                " 'running', false, '', '[]', '{}', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )

            await db.migrate(engine)

            flow = await Flow.select().where(Flow.id == flow_id).first()
            assert flow["version"] == 1
            [version] = await FlowVersion.select().where(FlowVersion.flow_id == flow_id)
            assert version["version"] == 1 and msgspec.json.decode(version["actions"]) == actions
            run = await Activeflow.select().where(Activeflow.id == run_id).first()
            assert (run["flow_version"], run["start_attempts"]) == (0, 0)
            _, planned = await activeflows.run_plan(run_id, run["flow_version"])
            assert planned == run_actions
            # The migrated flow goes on versioning; the unique index holds.
            await flows.update_flow(customer_id, flow_id, {"actions": []})
            versions = await FlowVersion.select(FlowVersion.version).where(FlowVersion.flow_id == flow_id)
            assert sorted(v["version"] for v in versions) == [1, 2]
            with pytest.raises((asyncpg.UniqueViolationError, sqlite3.IntegrityError)):
                await FlowVersion.insert(FlowVersion(flow_id=flow_id, version=2, actions="[]"))
        finally:
            await db.stop(engine)
            db.use_engine(pg_engine)
