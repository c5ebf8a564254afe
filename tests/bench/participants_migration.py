"""How long migrations 0013/0013b (participants) take on a populated PostgreSQL database.

`.venv/bin/python -m tests.bench.participants_migration [conversations] [messages per conversation]`
(defaults 100000 and 2) makes a throwaway database, migrates it to just before 0013, fills it with
COPY (each conversation: one incoming and, from the second on, outgoing messages; one contact per
ten peers), times the migrations, checks the participant count and prints one JSON object."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from hub import db
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database
from tests.integration.test_participants_migration import migration_before_ours

NIL = uuid.UUID(int=0)


async def fill(dsn: str, n: int, per_conversation: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        customer, account = uuid.uuid4(), uuid.uuid4()
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        await conn.execute(
            "INSERT INTO customers (id, name) VALUES ($1, 'bench')",
            customer,
        )
        await conn.execute(
            "INSERT INTO accounts (id, customer_id, type, name, number, sid, token) "
            "VALUES ($1, $2, 'sms', 'Main', '+15550001000', 'AC1', 't')",
            account,
            customer,
        )
        peers = [f"+1999{i:07d}" for i in range(n)]
        conversations = [uuid.uuid4() for _ in range(n)]
        me = '{"type": "tel", "target": "+15550001000", "target_name": "", "name": "Main", "detail": ""}'
        await conn.copy_records_to_table(
            "conversations",
            records=[
                (
                    conversations[i],
                    customer,
                    account,
                    "message",
                    f"SMS \u00b7 {peers[i]}",
                    "SMS conversation",
                    "",
                    NIL,
                    "+15550001000",
                    peers[i],
                    me,
                    f'{{"type": "tel", "target": "{peers[i]}", "target_name": "", "name": "", "detail": ""}}',
                    t0 + timedelta(seconds=i),
                    t0 + timedelta(seconds=i),
                )
                for i in range(n)
            ],
            columns=[
                "id",
                "customer_id",
                "account_id",
                "type",
                "name",
                "detail",
                "owner_type",
                "owner_id",
                "self_target",
                "peer_target",
                "self_address",
                "peer_address",
                "tm_create",
                "tm_update",
            ],
        )
        contacts = [(uuid.uuid4(), customer, f"Contact {i}") for i in range(0, n, 10)]
        await conn.copy_records_to_table("contacts", records=contacts, columns=["id", "customer_id", "name"])
        await conn.copy_records_to_table(
            "contact_addresses",
            records=[
                (uuid.uuid4(), contact_id, customer, "tel", peers[j * 10], 0)
                for j, (contact_id, _, _) in enumerate(contacts)
            ],
            columns=["id", "contact_id", "customer_id", "type", "target", "position"],
        )
        await conn.copy_records_to_table(
            "messages",
            records=[
                (
                    uuid.uuid4(),
                    customer,
                    conversations[i],
                    account,
                    "incoming" if k == 0 else "outgoing",
                    "done",
                    "text",
                    f"SM{i}-{k}" if k == 0 else None,
                    t0 + timedelta(seconds=i, milliseconds=k),
                    t0 + timedelta(seconds=i, milliseconds=k),
                )
                for i in range(n)
                for k in range(per_conversation)
            ],
            columns=[
                "id",
                "customer_id",
                "conversation_id",
                "account_id",
                "direction",
                "status",
                "text",
                "provider_message_id",
                "tm_create",
                "tm_update",
            ],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def main(n: int, per_conversation: int) -> dict:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        engine = await db.open_engine(url)
        db.use_engine(engine)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                assert (await run_forwards(app_name="hub", migration_id=migration_before_ours())).success
            fill_start = time.perf_counter()
            await fill(url, n, per_conversation)
            fill_s = time.perf_counter() - fill_start
            start = time.perf_counter()
            await db.migrate(engine)
            migrate_s = time.perf_counter() - start
            conn = await asyncpg.connect(url)
            try:
                participants = await conn.fetchval("SELECT count(*) FROM participants")
                linked = await conn.fetchval("SELECT count(*) FROM participants WHERE contact_id IS NOT NULL")
                backfilled = await conn.fetchval("SELECT count(*) FROM messages WHERE channel = 'sms'")
            finally:
                await conn.close()
        finally:
            await db.stop(engine)
    assert participants == n and backfilled == n * per_conversation
    return {
        "conversations": n,
        "messages": n * per_conversation,
        "participants": participants,
        "participants_with_contact": linked,
        "fill_s": round(fill_s, 2),
        "migration_0013_s": round(migrate_s, 2),
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    per = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print(json.dumps(asyncio.run(main(count, per))))
