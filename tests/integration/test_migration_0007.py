"""Migration 0007 (message delivery columns) on a populated database, PostgreSQL and SQLite."""

from __future__ import annotations

import contextlib
import io
import uuid
from pathlib import Path

import asyncpg
import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards

from hub import db
from tests.conftest import PG_ADMIN_DSN, _database_dsn

BEFORE_0007 = "2026-11-25T13:00:01:000000"


@contextlib.asynccontextmanager
async def fresh_engine(kind: str, tmp_path: Path):
    if kind == "sqlite":
        engine = await db.open_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
        yield engine
        return
    name = f"hub_mig_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = await db.open_engine(_database_dsn(name))
        yield engine
        if engine.pool:
            await engine.close_connection_pool()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _rows(engine, ids) -> list[dict]:
    listed = ", ".join(f"'{i}'" for i in ids)
    return await engine.run_ddl(
        "SELECT id, text, status, provider_message_id, delivery_status, content_type,"
        f" provider_message_ids, tm_delivered FROM messages WHERE id IN ({listed}) ORDER BY text"
    )


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_0007_keeps_existing_messages(kind, tmp_path, pg_engine):
    """Tables are bound to the throwaway engine only while migrations run (the session's worker
    keeps using the test database); the checks read that engine directly."""
    async with fresh_engine(kind, tmp_path) as engine:
        try:
            db.use_engine(engine)
            with contextlib.redirect_stdout(io.StringIO()):
                result = await run_forwards(app_name="hub", migration_id=BEFORE_0007)
            db.use_engine(pg_engine)
            assert result.success, result.message
            ids = [uuid.uuid4() for _ in range(3)]
            for i, message_id in enumerate(ids):
                await engine.run_ddl(
                    "INSERT INTO messages (id, customer_id, conversation_id, account_id, direction, status,"
                    " source, destination, text, medias, provider_message_id, reason, tm_create, tm_update)"
                    f" VALUES ('{message_id}', '{uuid.uuid4()}', '{uuid.uuid4()}', '{uuid.uuid4()}',"
                    f" 'outgoing', 'done', '{{}}', '{{}}', 'old text {i}', '[]', 'SM{i}', '',"
                    " '2026-11-30 10:00:00+00:00', '2026-11-30 10:00:00+00:00')"
                )
            await db.migrate(engine)
            db.use_engine(pg_engine)
            rows = await _rows(engine, ids)
            assert [str(r["id"]) for r in rows] == [str(i) for i in ids]
            assert [(r["text"], r["provider_message_id"], r["status"]) for r in rows] == [
                (f"old text {i}", f"SM{i}", "done") for i in range(3)
            ]
            assert {(r["delivery_status"], r["content_type"], r["provider_message_ids"]) for r in rows} == {
                ("", "", "[]")
            }
            assert {r["tm_delivered"] for r in rows} == {None}
            # The new columns take values.
            await engine.run_ddl(f"UPDATE messages SET delivery_status = 'delivered' WHERE id = '{ids[0]}'")
            assert (await _rows(engine, ids[:1]))[0]["delivery_status"] == "delivered"
        finally:
            db.use_engine(pg_engine)
