"""`media`: files the hub stores itself (email attachments), bytes in the database (BYTEA on
PostgreSQL, BLOB on SQLite), served at /v1.0/media/{id}. A new table: no existing row changes."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.engine.sqlite import SQLiteEngine

ID = "2026-12-01T10:12:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "stored media"

MEDIA = """CREATE TABLE "media" (
    "id" UUID PRIMARY KEY NOT NULL,
    "customer_id" UUID NOT NULL,
    "conversation_id" UUID NOT NULL,
    "message_id" UUID NOT NULL,
    "content_type" VARCHAR(255) NOT NULL DEFAULT 'application/octet-stream',
    "filename" VARCHAR(255) NOT NULL DEFAULT '',
    "size" INTEGER NOT NULL DEFAULT 0,
    "data" {blob} NOT NULL,
    "tm_create" TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
)"""
INDEXES = [
    'CREATE INDEX "media_customer_id" ON "media" ("customer_id")',
    'CREATE INDEX "media_message_id" ON "media" ("message_id")',
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        await engine.run_ddl(MEDIA.format(blob="BLOB" if isinstance(engine, SQLiteEngine) else "BYTEA"))
        for index in INDEXES:
            await engine.run_ddl(index)

    manager.add_raw(run)
    return manager
