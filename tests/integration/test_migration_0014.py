"""Migration 0014 (conversation tags) on a populated database, on PostgreSQL and SQLite: existing
conversations keep their data, get no tags, and can then be tagged and filtered by tag."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import pytest

from tests.helpers import database_before, run_migration_scenario

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-01T10:14:00:000000"
DONE = "migration 0014 checked"


async def insert_conversation(conversation_id, customer_id, account_id, peer: str, stamp) -> None:
    """A conversation row with the columns every migration since 0001 has (raw SQL: today's
    table class may name columns that do not exist yet)."""
    from hub.tables import Conversation

    await Conversation.raw(
        "INSERT INTO conversations (id, customer_id, account_id, type, name, detail, owner_type, "
        "owner_id, self_target, peer_target, self_address, peer_address, tm_create, tm_update, "
        "tm_delete) VALUES ({}, {}, {}, 'message', {}, 'SMS conversation', '', {}, '+15550001000', "
        "{}, {}, {}, {}, {}, NULL)",
        conversation_id,
        customer_id,
        account_id,
        f"SMS · {peer}",
        uuid.UUID(int=0),
        peer,
        "{}",
        "{}",
        stamp,
        stamp,
    )


async def scenario(url: str) -> None:
    from hub import conversations, db
    from hub.permissions import ADMIN
    from hub.tables import Conversation

    async with database_before(url, OURS) as engine:
        customer_id, account_id = uuid.uuid4(), uuid.uuid4()
        stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        ids = [uuid.uuid4() for _ in range(3)]
        for n, conversation_id in enumerate(ids):
            await insert_conversation(conversation_id, customer_id, account_id, f"+1415555000{n}", stamp)
        await db.migrate(engine)

        rows = await Conversation.select().order_by(Conversation.peer_target)
        assert [r["id"] for r in rows] == ids
        assert [r["name"] for r in rows] == [f"SMS · +1415555000{n}" for n in range(3)]
        assert all(r["tags"] == "[]" and r["tm_create"] == stamp for r in rows)

        vip = conversations.ListFilters(tag="vip")
        await conversations.update_conversation(customer_id, ids[0], {"tags": ["VIP", "billing"]})
        await conversations.change_tags(customer_id, ids[2], uuid.uuid4(), ADMIN, add=["vip"])
        listed, _ = await conversations.list_conversations(customer_id, None, 10, "", filters=vip)
        assert {r["id"] for r in listed} == {ids[0], ids[2]}
        await conversations.change_tags(customer_id, ids[0], uuid.uuid4(), ADMIN, remove=["vip"])
        listed, _ = await conversations.list_conversations(customer_id, None, 10, "", filters=vip)
        assert [r["id"] for r in listed] == [ids[2]]


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0014_keeps_conversations_and_adds_tags(engine, tmp_path):
    run_migration_scenario("tests.integration.test_migration_0014", engine, tmp_path, PG_ADMIN_DSN, DONE)


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print(DONE, flush=True)
