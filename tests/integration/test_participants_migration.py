"""Migrations 0013/0013b (participants) on a populated database, on PostgreSQL and SQLite: every
conversation gets its first participant from its room key (same id), messages their participant
and channel, nothing else changes, and room matching goes on through the participants. Each run
is a subprocess, like test_migration_0009 (a half-migrated database bound in the test process
would be seen by the session's webhook relay)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import migration_before, run_migration_scenario

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
OURS = "2026-12-01T10:13:00:000000"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ALICE, BOB, CAROL = "+14155551234", "+14155552345", "+14155553456"
LINE_USER = "U" + "ab" * 16
NUMBER = "+15550001000"


def _address(kind: str, target: str, target_name: str = "", name: str = "") -> str:
    return (
        f'{{"type": "{kind}", "target": "{target}", "target_name": "{target_name}", '
        f'"name": "{name}", "detail": ""}}'
    )


async def _insert(sql: str, *values) -> None:
    from hub.tables import Contact

    await Contact.raw(sql, *values)


async def _conversation(
    ids, key, customer, account, kind, peer, peer_name, self_target, created, deleted=None
):
    ids[key] = uuid.uuid4()
    address_kind = "line" if kind == "line" else "tel"
    await _insert(
        "INSERT INTO conversations (id, customer_id, account_id, type, name, detail, owner_type, owner_id, "
        "self_target, peer_target, self_address, peer_address, tm_create, tm_update, tm_delete) "
        "VALUES ({}, {}, {}, {}, {}, '', '', {}, {}, {}, {}, {}, {}, {}, {})",
        ids[key],
        ids[customer],
        ids[account],
        kind,
        f"{key} title",
        uuid.UUID(int=0),
        self_target,
        peer,
        _address(address_kind, self_target, name="Main line"),
        _address(address_kind, peer, peer_name),
        created,
        created + timedelta(minutes=1),
        deleted,
    )


async def _message(ids, conversation, account, direction, at) -> uuid.UUID:
    message_id = uuid.uuid4()
    await _insert(
        "INSERT INTO messages (id, customer_id, conversation_id, account_id, direction, status, text, "
        "provider_message_id, tm_create, tm_update) VALUES ({}, {}, {}, {}, {}, 'done', 'kept', {}, {}, {})",
        message_id,
        ids["customer"],
        ids[conversation],
        ids[account],
        direction,
        f"P{message_id.hex}" if direction == "incoming" else None,
        at,
        at,
    )
    return message_id


async def populate() -> dict[str, uuid.UUID]:
    """Rows as the code before 0013 wrote them (columns of then only)."""
    ids: dict[str, uuid.UUID] = {}
    for key in ("customer", "stranger", "alice", "gone", "sms", "line", "stranger_sms"):
        ids[key] = uuid.uuid4()
    for key in ("customer", "stranger"):
        await _insert(
            "INSERT INTO customers (id, name, tm_create, tm_update) VALUES ({}, {}, {}, {})",
            ids[key],
            key,
            T0,
            T0,
        )
    for key, name, deleted, target in (("alice", "Alice", None, ALICE), ("gone", "Gone", T0, BOB)):
        await _insert(
            "INSERT INTO contacts (id, customer_id, name, tm_create, tm_update, tm_delete) "
            "VALUES ({}, {}, {}, {}, {}, {})",
            ids[key],
            ids["customer"],
            name,
            T0,
            T0,
            deleted,
        )
        await _insert(
            "INSERT INTO contact_addresses (id, contact_id, customer_id, type, target, position) "
            "VALUES ({}, {}, {}, 'tel', {}, 0)",
            uuid.uuid4(),
            ids[key],
            ids["customer"],
            target,
        )
    for key, customer, kind in (
        ("sms", "customer", "sms"),
        ("line", "customer", "line"),
        ("stranger_sms", "stranger", "sms"),
    ):
        await _insert(
            "INSERT INTO accounts (id, customer_id, type, name, number, sid, secret, token, tm_create, "
            "tm_update) VALUES ({}, {}, {}, 'Main line', {}, 'AC1', 'secret', 'token', {}, {})",
            ids[key],
            ids[customer],
            kind,
            NUMBER if kind == "sms" else "",
            T0,
            T0,
        )
    await _conversation(ids, "c_alice", "customer", "sms", "message", ALICE, "Alice", NUMBER, T0)
    await _conversation(ids, "c_line", "customer", "line", "line", LINE_USER, "Lin", str(ids["line"]), T0)
    await _conversation(
        ids, "c_bob_deleted", "customer", "sms", "message", BOB, "", NUMBER, T0, T0 + timedelta(hours=1)
    )
    await _conversation(ids, "c_bob", "customer", "sms", "message", BOB, "", NUMBER, T0 + timedelta(hours=2))
    # One peer reached on two numbers of one account: two rooms under the old key, one address now.
    await _conversation(ids, "c_carol_old", "customer", "sms", "message", CAROL, "", "+15550001999", T0)
    await _conversation(
        ids, "c_carol_new", "customer", "sms", "message", CAROL, "", NUMBER, T0 + timedelta(hours=3)
    )
    await _conversation(ids, "c_stranger", "stranger", "stranger_sms", "message", ALICE, "", NUMBER, T0)
    ids["m1"] = await _message(ids, "c_alice", "sms", "incoming", T0 + timedelta(minutes=1))
    ids["m2"] = await _message(ids, "c_alice", "sms", "incoming", T0 + timedelta(minutes=5))
    ids["m3"] = await _message(ids, "c_alice", "sms", "outgoing", T0 + timedelta(minutes=9))
    ids["m4"] = await _message(ids, "c_bob_deleted", "sms", "incoming", T0 + timedelta(minutes=2))
    return ids


async def _rows(engine, table: str, columns: list[str] | None = None) -> tuple[list[str], list[str]]:
    rows = await engine.run_ddl(f'SELECT * FROM "{table}"')
    columns = columns or (sorted(dict(rows[0]).keys()) if rows else [])
    return columns, sorted(repr({c: str(r[c]) for c in columns}) for r in rows)


async def _index_names(engine) -> set[str]:
    from piccolo.engine.sqlite import SQLiteEngine

    if isinstance(engine, SQLiteEngine):
        rows = await engine.run_ddl("SELECT name FROM sqlite_master WHERE type = 'index'")
    else:
        rows = await engine.run_ddl("SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'")
    return {r["name"] for r in rows}


async def scenario(url: str) -> None:
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from hub import db, outbound
    from hub.addresses import Address
    from hub.inbound import InboundMessage, store_inbound
    from hub.models import participant_out
    from hub.tables import Account, Customer, Message, Participant

    engine = await db.open_engine(url)
    db.use_engine(engine)
    await db.start(engine, pool_size=2)
    try:
        result = await run_forwards(app_name="hub", migration_id=migration_before(OURS))
        assert result.success, result.message
        ids = await populate()
        before = {t: await _rows(engine, t) for t in ("conversations", "messages", "contacts", "accounts")}
        assert "conversations_room_key" in await _index_names(engine)
        await db.migrate(engine)

        # Nothing of then changed.
        for table, (columns, rows) in before.items():
            assert (await _rows(engine, table, columns))[1] == rows, table
        indexes = await _index_names(engine)
        assert "conversations_room_key" not in indexes
        assert {"participants_live_address", "participants_address", "participants_conversation"} <= indexes

        # One participant per conversation, with the conversation's id.
        rows = {r["id"]: r for r in await Participant.select()}
        conversation_keys = [k for k in ids if k.startswith("c_")]
        assert set(rows) == {ids[k] for k in conversation_keys}
        alice = rows[ids["c_alice"]]
        assert alice["conversation_id"] == ids["c_alice"] and alice["customer_id"] == ids["customer"]
        assert (alice["account_id"], alice["address_type"], alice["target"], alice["target_name"]) == (
            ids["sms"],
            "tel",
            ALICE,
            "Alice",
        )
        assert alice["contact_id"] == ids["alice"] and alice["conversation_status"] == "open"
        # The latest inbound message (not the later outgoing one) made it last active.
        assert alice["tm_last_active"] == T0 + timedelta(minutes=5)
        assert alice["tm_delete"] is None and alice["tm_create"] == T0
        assert participant_out(alice).address.target_name == "Alice"
        line = rows[ids["c_line"]]
        assert (line["address_type"], line["target"], line["target_name"]) == ("line", LINE_USER, "Lin")
        assert line["tm_last_active"] is None and line["contact_id"] is None
        # A deleted conversation's participant is not live; a deleted contact links nobody.
        assert rows[ids["c_bob_deleted"]]["tm_delete"] == T0 + timedelta(hours=1)
        assert rows[ids["c_bob"]]["tm_delete"] is None and rows[ids["c_bob"]]["contact_id"] is None
        # The newest of two rooms sharing an address keeps it live; the other keeps its history.
        assert rows[ids["c_carol_new"]]["tm_delete"] is None
        assert rows[ids["c_carol_old"]]["tm_delete"] is not None
        assert rows[ids["c_stranger"]]["customer_id"] == ids["stranger"]

        messages = {r["id"]: r for r in await Message.select()}
        assert {(m["participant_id"], m["channel"]) for m in messages.values()} == {
            (ids["c_alice"], "sms"),
            (ids["c_bob_deleted"], "sms"),
        }
        customers = await Customer.select(Customer.conversation_routing)
        assert {c["conversation_routing"] for c in customers} == {"contact"}

        # Room matching goes on through the migrated participants.
        account = await Account.select().where(Account.id == ids["sms"]).first()
        for peer, expected in ((ALICE, "c_alice"), (BOB, "c_bob"), (CAROL, "c_carol_new")):
            stored = await store_inbound(
                InboundMessage(
                    account=account,
                    peer=Address(type="tel", target=peer),
                    self_address=Address(type="tel", target=NUMBER),
                    provider_message_id=f"after-{peer}",
                    text="after the migration",
                )
            )
            assert not stored.conversation_created and stored.conversation["id"] == ids[expected], peer
            assert stored.message["participant_id"] == ids[expected]
        reply, _ = await outbound.create_outgoing(ids["customer"], ids["c_alice"], "reply", [])
        assert (reply["participant_id"], reply["channel"], reply["account_id"]) == (
            ids["c_alice"],
            "sms",
            ids["sms"],
        )
        line_account = await Account.select().where(Account.id == ids["line"]).first()
        followed = await store_inbound(
            InboundMessage(
                account=line_account,
                peer=Address(type="line", target=LINE_USER),
                self_address=Address(type="line", target=str(ids["line"])),
                provider_message_id="line-after",
                text="hi",
            )
        )
        assert followed.conversation["id"] == ids["c_line"]
    finally:
        await db.stop(engine)


@pytest.mark.parametrize("engine", ["postgres", "sqlite"])
def test_migration_0013_gives_every_conversation_its_first_participant(engine, tmp_path):
    run_migration_scenario(
        "tests.integration.test_participants_migration",
        engine,
        tmp_path,
        PG_ADMIN_DSN,
        "migration 0013 checked",
    )


if __name__ == "__main__":
    asyncio.run(scenario(sys.argv[1]))
    print("migration 0013 checked", flush=True)
