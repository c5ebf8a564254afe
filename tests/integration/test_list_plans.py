"""Every conversation list filter is served by an index (issue 15, item 5): EXPLAIN of the exact
statement the API sends (hub/list_pg.py; its custom and generic plans), on PostgreSQL with 100,000
conversations of one customer, shows no sequential scan of conversations or tags. The timings
printed (-s) are figures for the notes, not assertions."""

from __future__ import annotations

import statistics
import time
import uuid

import pytest

from hub import conversations, db
from hub.conversations import ListFilters, list_query_parts, list_statement
from hub.pagination import encode_token, page_query
from hub.tables import Conversation
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database

ROWS = 100_000

LOAD = [
    # One customer, two SMS accounts and a LINE account, 10 owners, 5 % closed.
    """INSERT INTO conversations (id, customer_id, account_id, type, name, detail, owner_type, owner_id,
        self_target, peer_target, self_address, peer_address, tags, status, tm_create, tm_update,
        tm_last_message, last_message)
    SELECT gen_random_uuid(), '{customer}', ('{accounts}'::uuid[])[1 + g % 3],
        CASE WHEN g % 3 = 2 THEN 'line' ELSE 'message' END, 'SMS · x', '', 'agent',
        ('{owners}'::uuid[])[1 + g % 10], '+15550001000', '+1415' || lpad(g::text, 7, '0'), '{{}}', '{{}}',
        CASE WHEN g % 100 = 0 THEN '["vip", ' ELSE '[' END || '"topic-' || (g % 50) || '"]',
        CASE WHEN g % 20 = 0 THEN 'closed' ELSE 'open' END,
        now() - make_interval(secs => g), now(), now() - make_interval(secs => g), ''
    FROM generate_series(1, {rows}) g""",
    # Every conversation has one of 50 topic tags, 1 % also "vip" (both stores, as the hub keeps them).
    """INSERT INTO conversation_tags (id, customer_id, conversation_id, tag, tm_create)
    SELECT gen_random_uuid(), customer_id, id, tag, tm_create
    FROM conversations, jsonb_array_elements_text(tags::jsonb) tag""",
    # Each conversation's first participant (the peer at its account).
    """INSERT INTO participants (id, customer_id, conversation_id, account_id, address_type, target,
        target_name, address, self_address, conversation_status, tm_create, tm_update)
    SELECT gen_random_uuid(), customer_id, id, account_id, CASE WHEN type = 'line' THEN 'line' ELSE 'tel' END,
        peer_target, '', '{{}}', '{{}}', status, tm_create, tm_update FROM conversations""",
    "ANALYZE",
]


def _literal(value) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


async def plans(connection, sql: str, args: list) -> list[str]:
    """The statement's custom plan for `args` and its generic plan (any values)."""
    custom = await connection.fetch(f"EXPLAIN {sql}", *args)
    await connection.execute(f"PREPARE listed AS {sql}")
    try:
        await connection.execute("SET plan_cache_mode = force_generic_plan")
        generic = await connection.fetch(f"EXPLAIN EXECUTE listed({', '.join(map(_literal, args))})")
    finally:
        await connection.execute("RESET plan_cache_mode")
        await connection.execute("DEALLOCATE listed")
    return ["\n".join(r[0] for r in custom), "\n".join(r[0] for r in generic)]


@pytest.mark.slow
async def test_every_filter_uses_an_index_at_100k_conversations(pg_engine):
    customer = uuid.uuid4()
    accounts_ = [uuid.uuid4() for _ in range(3)]
    owners = [uuid.uuid4() for _ in range(10)]
    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        engine = await db.open_engine(url)
        try:
            db.use_engine(engine)
            await db.migrate(engine)
            for statement in LOAD:
                await engine.run_ddl(
                    statement.format(
                        customer=customer,
                        accounts="{" + ",".join(map(str, accounts_)) + "}",
                        owners="{" + ",".join(map(str, owners)) + "}",
                        rows=ROWS,
                    )
                )
            assert await Conversation.count() == ROWS
            cases = {
                "none": (None, ListFilters()),
                "owner": (owners[3], ListFilters()),
                "status closed": (None, ListFilters(status="closed")),
                "status open": (None, ListFilters(status="open")),
                "tag": (None, ListFilters(tag="vip")),
                "tag common": (None, ListFilters(tag="topic-7")),
                "account": (None, ListFilters(account_id=accounts_[1])),
                "type line": (None, ListFilters(type="line")),
                "peer": (None, ListFilters(peer="(415) 000-1234")),
                "owner + tag": (owners[0], ListFilters(tag="vip")),
                "tag + status closed": (None, ListFilters(tag="topic-10", status="closed")),
                "status + type + account": (
                    None,
                    ListFilters(status="closed", type="line", account_id=accounts_[2]),
                ),
            }
            connection = await engine.get_new_connection()
            for name, (owner, filters) in cases.items():
                # The statement the hub sends (hub/list_pg.py), planned for these values and, as
                # asyncpg's prepared statement may be after five runs, for any values.
                sql, args = list_statement(customer, owner, 100, "", filters)
                for plan in await plans(connection, sql, args):
                    assert "Seq Scan on conversations" not in plan, f"{name}:\n{plan}"
                    assert "Seq Scan on conversation_tags" not in plan, f"{name}:\n{plan}"
                    assert "Seq Scan on participants" not in plan, f"{name}:\n{plan}"
                    if filters.tag is not None:
                        # Through the tag's rows of migration 0019, not row by row through every
                        # conversation's JSON tags.
                        assert "conversation_tags_page" in plan and "jsonb" not in plan, f"{name}:\n{plan}"
                    if filters.tag is not None and filters == ListFilters(tag=filters.tag) and owner is None:
                        # A tag alone: its rows in list order, each listed conversation by its key, no
                        # sort. (With another filter the planner may also hash-join both sides when it
                        # expects fewer rows than a page.)
                        assert "Scan Backward using conversation_tags_page" in plan, f"{name}:\n{plan}"
                        assert "conversations_pkey" in plan and "Sort" not in plan, f"{name}:\n{plan}"
                    # One process per list (hub/db.py PG_SERVER_SETTINGS): no parallel workers to start.
                    assert "Gather" not in plan, f"{name}:\n{plan}"
                rows, _ = await conversations.list_page(customer, owner, 100, "", filters)
                assert rows, name
                # A later page seeks to its place in the index instead of walking the rows before it.
                conditions, order = list_query_parts(customer, owner, filters)
                middle = await page_query(Conversation, conditions, ROWS // 20, "", order)
                token = encode_token(middle[-1]["tm_create"], middle[-1]["id"])
                later_sql, later_args = list_statement(customer, owner, 100, token, filters)
                if name in ("none", "owner", "status closed", "tag", "tag common"):
                    for later_plan in await plans(connection, later_sql, later_args):
                        lines = later_plan.splitlines()
                        assert any("Index Cond" in line and "tm_create <=" in line for line in lines), (
                            f"{name}, a later page:\n{later_plan}"
                        )
                timings = []
                for _ in range(30):
                    started = time.perf_counter()
                    await conversations.list_page(customer, owner, 100, "", filters)
                    timings.append((time.perf_counter() - started) * 1000)
                timings.sort()
                print(f"list {name}: p50 {statistics.median(timings):.2f} ms, p99 {timings[-1]:.2f} ms")
            await connection.close()
        finally:
            db.use_engine(pg_engine)
            await db.stop(engine)


async def test_tag_list_walks_the_tag_index_in_order_on_sqlite(tmp_path):
    """SQLite's plan of a tagged list (alone, with another filter, on a later page): the tag's rows
    by `conversation_tags_page` in list order, each conversation by its key, no sort."""
    from datetime import UTC, datetime

    from hub.pagination import encode_token

    engine = await db.open_engine(f"sqlite:///{tmp_path / 'plans.sqlite'}")
    await db.migrate(engine)
    customer = uuid.uuid4()
    cases = [(None, ListFilters(tag="VIP")), (uuid.uuid4(), ListFilters(tag="vip", status="closed"))]
    for owner, filters in cases:
        for token in ("", encode_token(datetime.now(UTC), uuid.uuid4())):
            conditions, order = list_query_parts(customer, owner, filters)
            query = page_query(Conversation, conditions, 100, token, order)
            plan = "\n".join(r["detail"] for r in await engine.run_ddl(f"EXPLAIN QUERY PLAN {query}"))
            first = plan.splitlines()[0]
            assert "conversation_tags_page (customer_id=? AND tag=?" in first, plan
            assert "SEARCH conversations USING" in plan and "(id=?)" in plan, plan
            assert "TEMP B-TREE" not in plan and "SCAN conversations" not in plan, plan
