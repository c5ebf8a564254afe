"""Migration 0016 (the dialogue inbox) on a populated database, on PostgreSQL and SQLite: existing
runs stay as they were and are not in dialogue; inbound routing works on the migrated schema
(a run put in dialogue takes the next message, in position order, once per message)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import pytest

from tests.helpers import database_before, run_migration_scenario
from tests.integration.test_migration_0014 import insert_conversation

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-03T10:16:00:000000"
DONE = "migration 0016 checked"


async def insert_run(run_id, customer_id, conversation_id, account_id, status, stamp) -> None:
    from hub.tables import Activeflow

    await Activeflow.raw(
        "INSERT INTO activeflows (id, customer_id, flow_id, flow_name, conversation_id, account_id, "
        "message_id, workflow_id, flow_version, actions, status, started, current_action_id, "
        "executed_actions, variables, reason, start_attempts, tm_create, tm_update, tm_end) "
        "VALUES ({}, {}, {}, 'f', {}, {}, NULL, {}, 1, '[]', {}, true, 'a', {}, {}, '', 0, {}, {}, NULL)",
        run_id,
        customer_id,
        uuid.uuid4(),
        conversation_id,
        account_id,
        f"activeflow-{run_id}",
        status,
        '["a"]',
        '{"x": "1"}',
        stamp,
        stamp,
    )


async def scenario(url: str) -> None:
    from hub import activeflows, db, dialogues
    from hub.db import current_engine, transaction
    from hub.models import activeflow_out
    from hub.tables import Activeflow, Conversation

    async with database_before(url, OURS) as engine:
        customer_id, account_id, conversation_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        stamp = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
        await insert_conversation(conversation_id, customer_id, account_id, "+14155550001", stamp)
        running, ended = uuid.uuid4(), uuid.uuid4()
        await insert_run(running, customer_id, conversation_id, account_id, "running", stamp)
        await insert_run(ended, customer_id, conversation_id, account_id, "ended", stamp)
        await db.migrate(engine)

        for run_id, status in ((running, "running"), (ended, "ended")):
            shown = activeflow_out(await activeflows.get_activeflow(customer_id, run_id))
            assert (shown.status, shown.in_dialogue, shown.inbox) == (status, False, [])
            assert (shown.executed_actions, shown.variables) == (["a"], {"x": "1"})
        conversation = await Conversation.select().where(Conversation.id == conversation_id).first()
        assert await dialogues.enter(running) == []
        assert await dialogues.enter(ended) == []  # an ended run does not enter
        for n in (1, 2):
            message = {"id": uuid.uuid4(), "text": f"m{n}", "channel": "sms", "medias": "[]"}
            async with transaction(current_engine()):
                routing = await dialogues.route_inbound({}, conversation, message)
            assert routing.activeflow is None and routing.delivery["position"] == n
        assert [r["position"] for r in await dialogues.inbox(running)] == [1, 2]
        await dialogues.end(running)
        assert [r["state"] for r in await dialogues.inbox(running)] == ["unconsumed", "unconsumed"]
        row = await Activeflow.select(Activeflow.in_dialogue).where(Activeflow.id == running).first()
        assert row["in_dialogue"] is False


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0016_keeps_runs_and_routes_into_the_inbox(engine, tmp_path):
    run_migration_scenario("tests.integration.test_migration_0016", engine, tmp_path, PG_ADMIN_DSN, DONE)


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print(DONE, flush=True)
