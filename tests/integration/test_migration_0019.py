"""Migration 0019 (the tag filter in list order) on a populated database, on PostgreSQL and SQLite:
every tag row gets its conversation's tm_create, tagged lists keep their order (ties by id), their
pages and their other filters, and tags written afterwards are listed the same way."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from tests.helpers import database_before, run_migration_scenario

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-03T10:19:00:000000"
DONE = "migration 0019 checked"


async def insert_conversation(
    conversation_id, customer_id, account_id, tags: list[str], status, stamp
) -> None:
    """A conversation row and its tag rows as the hub wrote them before 0019 (raw SQL: today's
    table classes name a column that does not exist yet)."""
    from hub.tables import Conversation

    await Conversation.raw(
        "INSERT INTO conversations (id, customer_id, account_id, type, name, detail, owner_type, "
        "owner_id, self_target, peer_target, self_address, peer_address, tags, status, tm_create, "
        "tm_update, tm_delete) VALUES ({}, {}, {}, 'message', 'SMS', '', '', {}, '+15550001000', "
        "{}, {}, {}, {}, {}, {}, {}, NULL)",
        conversation_id,
        customer_id,
        account_id,
        uuid.UUID(int=0),
        f"+1415{conversation_id.int % 10_000_000:07d}",
        "{}",
        "{}",
        msgspec.json.encode(tags).decode(),
        status,
        stamp,
        stamp,
    )
    for tag in tags:
        await Conversation.raw(
            "INSERT INTO conversation_tags (id, customer_id, conversation_id, tag) VALUES ({}, {}, {}, {})",
            uuid.uuid4(),
            customer_id,
            conversation_id,
            tag,
        )


async def listed_ids(customer_id, filters, page_size: int) -> list:
    """Every page of the list, in order."""
    from hub import conversations

    ids, token = [], ""
    while True:
        rows, token = await conversations.list_conversations(
            customer_id, None, page_size, token, filters=filters
        )
        ids += [r["id"] for r in rows]
        if not token:
            return ids


async def scenario(url: str) -> None:
    from hub import conversations, db
    from hub.conversations import ListFilters
    from hub.permissions import ADMIN
    from hub.tables import Conversation, ConversationTag

    async with database_before(url, OURS) as engine:
        customer_id, other_customer, account_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        base = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
        made = []  # (id, tm_create, tags, status)
        for n in range(12):
            # Pairs share a tm_create: the order breaks their tie by id.
            stamp = base + timedelta(minutes=n // 2)
            tags = ["vip", "billing"] if n % 3 == 0 else ["billing"] if n % 3 == 1 else []
            status = "closed" if n % 4 == 0 else "open"
            made.append((uuid.uuid4(), stamp, tags, status))
            await insert_conversation(made[-1][0], customer_id, account_id, tags, status, stamp)
        elsewhere = uuid.uuid4()
        await insert_conversation(elsewhere, other_customer, account_id, ["vip"], "open", base)
        deleted = made[3][0]
        await Conversation.update({Conversation.tm_delete: base}).where(Conversation.id == deleted)
        # A tag row of no conversation (the hub never writes one): listed by nothing, dropped.
        orphan = uuid.uuid4()
        await Conversation.raw(
            "INSERT INTO conversation_tags (id, customer_id, conversation_id, tag) "
            "VALUES ({}, {}, {}, 'vip')",
            uuid.uuid4(),
            customer_id,
            orphan,
        )
        tag_rows_before = await Conversation.raw("SELECT count(*) AS n FROM conversation_tags")
        await db.migrate(engine)

        tag_rows = await ConversationTag.select()
        assert len(tag_rows) == tag_rows_before[0]["n"] - 1
        assert orphan not in {r["conversation_id"] for r in tag_rows}
        stamps = {
            r["id"]: r["tm_create"]
            for r in await Conversation.select(Conversation.id, Conversation.tm_create)
        }
        assert all(r["tm_create"] == stamps[r["conversation_id"]] for r in tag_rows)
        # The conversations themselves are untouched.
        for conversation_id, stamp, tags, status in made:
            row = await Conversation.select().where(Conversation.id == conversation_id).first()
            assert (row["tm_create"], msgspec.json.decode(row["tags"]), row["status"]) == (
                stamp,
                tags,
                status,
            )

        def expected(tag: str, status: str | None = None) -> list:
            hits = [
                (stamp, cid)
                for cid, stamp, tags, st in made
                if tag in tags and cid != deleted and status in (None, st)
            ]
            return [cid for _, cid in sorted(hits, reverse=True)]

        assert len(expected("billing")) == 7
        for page_size in (1, 2, 3, 100):
            assert await listed_ids(customer_id, ListFilters(tag="billing"), page_size) == expected("billing")
            assert await listed_ids(customer_id, ListFilters(tag="VIP"), page_size) == expected("vip")
        assert await listed_ids(customer_id, ListFilters(tag="vip", status="closed"), 1) == expected(
            "vip", "closed"
        )
        assert await listed_ids(customer_id, ListFilters(tag="billing", status="open"), 2) == expected(
            "billing", "open"
        )
        unfiltered = await listed_ids(customer_id, ListFilters(), 5)
        assert len(unfiltered) == 11 and deleted not in unfiltered

        # Tags written afterwards carry the order key too.
        untagged = made[2][0]
        await conversations.change_tags(customer_id, untagged, uuid.uuid4(), ADMIN, add=["vip"])
        await conversations.update_conversation(customer_id, made[1][0], {"tags": ["vip", "billing"]})
        await conversations.change_tags(customer_id, made[0][0], uuid.uuid4(), ADMIN, remove=["vip"])
        for n, (cid, stamp, tags, status) in enumerate(made):
            tags = ["vip"] if n == 2 else ["vip", "billing"] if n == 1 else ["billing"] if n == 0 else tags
            made[n] = (cid, stamp, tags, status)
        assert await listed_ids(customer_id, ListFilters(tag="vip"), 2) == expected("vip")
        assert await listed_ids(customer_id, ListFilters(tag="billing"), 3) == expected("billing")
        new_row = await ConversationTag.select().where(ConversationTag.conversation_id == untagged).first()
        assert new_row["tm_create"] == made[2][1]
        # Another customer's tagged conversation is never listed.
        assert elsewhere not in await listed_ids(customer_id, ListFilters(tag="vip"), 100)
        assert await listed_ids(other_customer, ListFilters(tag="vip"), 100) == [elsewhere]


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0019_orders_tag_rows_like_the_list(engine, tmp_path):
    run_migration_scenario("tests.integration.test_migration_0019", engine, tmp_path, PG_ADMIN_DSN, DONE)


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print(DONE, flush=True)
