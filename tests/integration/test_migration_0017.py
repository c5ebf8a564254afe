"""Migration 0017 (activeflows.parent_id) on a populated database, on PostgreSQL and SQLite: every
existing run stays as it was, with no parent; a sub-flow's row records its parent afterwards."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import pytest

from tests.helpers import database_before, run_migration_scenario

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-03T10:17:00:000000"
DONE = "migration 0017 checked"


async def insert_run(run_id, customer_id, flow_id, conversation_id, account_id, status, stamp) -> None:
    from hub.tables import Activeflow

    await Activeflow.raw(
        "INSERT INTO activeflows (id, customer_id, flow_id, flow_name, conversation_id, account_id, "
        "message_id, workflow_id, flow_version, actions, status, started, current_action_id, "
        "executed_actions, variables, reason, start_attempts, tm_create, tm_update) "
        "VALUES ({}, {}, {}, 'menu', {}, {}, {}, {}, 2, '[]', {}, {}, 'end', {}, {}, '', 0, {}, {})",
        run_id,
        customer_id,
        flow_id,
        conversation_id,
        account_id,
        uuid.uuid4(),
        f"activeflow-{run_id}",
        status,
        status != "running",
        '["end"]',
        '{"x": "1"}',
        stamp,
        stamp,
    )


async def scenario(url: str) -> None:
    from hub import activeflows, db
    from hub.models import activeflow_out
    from hub.tables import Activeflow

    async with database_before(url, OURS) as engine:
        customer_id, flow_id, conversation_id, account_id = (uuid.uuid4() for _ in range(4))
        stamp = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
        ended, running = uuid.uuid4(), uuid.uuid4()
        await insert_run(ended, customer_id, flow_id, conversation_id, account_id, "ended", stamp)
        await insert_run(running, customer_id, flow_id, conversation_id, account_id, "running", stamp)
        await db.migrate(engine)

        for run_id, status in ((ended, "ended"), (running, "running")):
            shown = activeflow_out(await activeflows.get_activeflow(customer_id, run_id))
            assert shown.parent_id is None
            assert (shown.status, shown.flow_version, shown.flow_name) == (status, 2, "menu")
            assert (shown.variables, shown.executed_actions) == ({"x": "1"}, ["end"])
            assert shown.conversation_id == conversation_id and shown.tm_create == stamp
        # The running one is still what recovery would (not) start: nothing else changed.
        assert [r["id"] for r in await activeflows.unstarted(0)] == [running]

        child = uuid.uuid4()
        await Activeflow.insert(
            Activeflow(
                id=child,
                customer_id=customer_id,
                flow_id=flow_id,
                conversation_id=conversation_id,
                account_id=account_id,
                workflow_id=f"activeflow-{running}/sub",
                parent_id=running,
            )
        )
        shown = activeflow_out(await activeflows.get_activeflow(customer_id, child))
        assert shown.parent_id == running


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0017_keeps_runs_and_adds_their_parent(engine, tmp_path):
    run_migration_scenario("tests.integration.test_migration_0017", engine, tmp_path, PG_ADMIN_DSN, DONE)


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print(DONE, flush=True)
