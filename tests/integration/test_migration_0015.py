"""Migration 0015 (lifecycle columns, inbox fields) on a populated database, on PostgreSQL and
SQLite: conversations stay, become `open`, and get `tm_last_message` / `last_message` from their
latest live message (deleted messages and message-less conversations handled)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import database_before, run_migration_scenario
from tests.integration.test_migration_0014 import insert_conversation

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-01T10:15:00:000000"
DONE = "migration 0015 checked"


async def insert_message(
    message_id, conversation, customer_id, account_id, direction, text, stamp, deleted=False
):
    from hub.tables import Message

    await Message.raw(
        "INSERT INTO messages (id, customer_id, conversation_id, account_id, direction, status, source, "
        "destination, text, medias, tm_create, tm_update, tm_delete) "
        "VALUES ({}, {}, {}, {}, {}, 'done', {}, {}, {}, {}, {}, {}, {})",
        message_id,
        customer_id,
        conversation,
        account_id,
        direction,
        "{}",
        "{}",
        text,
        "[]",
        stamp,
        stamp,
        stamp if deleted else None,
    )


async def scenario(url: str) -> None:
    from hub import conversations, db
    from hub.models import conversation_out

    async with database_before(url, OURS) as engine:
        customer_id, account_id = uuid.uuid4(), uuid.uuid4()
        stamp = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        talk, quiet = uuid.uuid4(), uuid.uuid4()
        await insert_conversation(talk, customer_id, account_id, "+14155550001", stamp)
        await insert_conversation(quiet, customer_id, account_id, "+14155550002", stamp)
        older, latest, gone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await insert_message(older, talk, customer_id, account_id, "incoming", "first", stamp)
        await insert_message(
            latest, talk, customer_id, account_id, "outgoing", "é" * 250, stamp + timedelta(minutes=1)
        )
        await insert_message(
            gone, talk, customer_id, account_id, "incoming", "", stamp + timedelta(minutes=2), True
        )
        await db.migrate(engine)

        shown = conversation_out(await conversations.get_conversation(customer_id, talk))
        assert shown.status == "open" and shown.tm_closed is None and shown.closed_reason == ""
        assert shown.previous_conversation_id is None and shown.name == "SMS · +14155550001"
        assert shown.tm_last_message == stamp + timedelta(minutes=1)
        assert shown.last_message is not None
        assert (shown.last_message.id, shown.last_message.direction) == (latest, "outgoing")
        assert shown.last_message.text == "é" * 200
        assert shown.last_message.tm_create == stamp + timedelta(minutes=1)
        empty = conversation_out(await conversations.get_conversation(customer_id, quiet))
        assert empty.last_message is None and empty.tm_last_message is None and empty.status == "open"


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0015_opens_conversations_and_fills_inbox_fields(engine, tmp_path):
    run_migration_scenario("tests.integration.test_migration_0015", engine, tmp_path, PG_ADMIN_DSN, DONE)


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print(DONE, flush=True)
