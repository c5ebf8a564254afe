"""The inbound hot path on PostgreSQL (hub.inbound_pg): a message to a conversation the address is
in already, owned by an agent or at an account without a flow, is one statement; everything the
general path guarantees holds for it."""

from __future__ import annotations

import asyncio
import json
import uuid

from hub import accounts, inbound_pg
from hub.actions import ActionIn
from hub.flows import create_flow
from hub.tables import Activeflow, Conversation, Event, Message, Participant
from tests.helpers import make_tenant, signed_sms, sms_params, wait_for


async def post(client, tenant, token: str | None = None, **kwargs):
    path, body, headers = signed_sms(tenant.account["id"], token or tenant.auth_token, sms_params(**kwargs))
    return await client.post(path, content=body, headers=headers)


async def message_events(conversation_id) -> list[dict]:
    """The conversation's message_created / _received events, in outbox order."""
    return (
        await Event.select(Event.type, Event.data)
        .where(
            Event.conversation_id == conversation_id,
            Event.type.is_in(["conversation_message_created", "conversation_message_received"]),
        )
        .order_by(Event.seq)
    )


async def open_owned_room(client, tenant, sender: str) -> dict:
    """A conversation with `sender`, owned by the tenant's agent, at an account with a flow."""
    # A flow that only waits: with a worker in the session its runs write nothing meanwhile.
    flow = await create_flow(
        tenant.customer_id, "nap", "", [ActionIn(id="a", type="sleep", option={"duration_ms": 3_600_000})]
    )
    await accounts.update_account(tenant.customer_id, tenant.account["id"], {"message_flow_id": flow["id"]})
    sid = "SM" + uuid.uuid4().hex
    assert (await post(client, tenant, sender=sender, body="first", sid=sid)).status_code == 200
    [first] = await Message.select(Message.conversation_id).where(Message.provider_message_id == sid)
    conversation = await Conversation.select().where(Conversation.id == first["conversation_id"]).first()
    # The first message started a run; say it is over by the time an agent takes over.
    assert await Activeflow.count().where(Activeflow.conversation_id == conversation["id"]) == 1
    await Activeflow.update({Activeflow.status: "ended"}).where(
        Activeflow.conversation_id == conversation["id"]
    )
    await set_owner(client, tenant, conversation, tenant.agent.id)
    return conversation


async def set_owner(client, tenant, conversation: dict, owner_id) -> None:
    response = await client.put(
        f"/v1.0/conversations/{conversation['id']}",
        json={"owner_id": str(owner_id)},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text


async def test_message_to_an_owned_room_is_stored_with_its_events_and_starts_no_flow(client, monkeypatch):
    tenant = await make_tenant()
    sender = "+14155550101"
    conversation = await open_owned_room(client, tenant, sender)
    runs_before = await Activeflow.count().where(Activeflow.conversation_id == conversation["id"])
    calls = []
    original = inbound_pg.store_in_owned_room

    async def spy(*args, **kwargs):
        outcome = await original(*args, **kwargs)
        calls.append(outcome[0])
        return outcome

    monkeypatch.setattr(inbound_pg, "store_in_owned_room", spy)
    sid = "SM" + uuid.uuid4().hex
    response = await post(client, tenant, sender=sender, body="owned hello", sid=sid)
    assert response.status_code == 200, response.text
    assert calls == ["stored"]  # the one-statement path took it

    [message] = await Message.select().where(Message.provider_message_id == sid)
    [participant] = await Participant.select().where(Participant.conversation_id == conversation["id"])
    assert message["conversation_id"] == conversation["id"]
    assert message["participant_id"] == participant["id"]
    assert (message["direction"], message["status"], message["channel"]) == ("incoming", "done", "sms")
    assert participant["tm_last_active"] == message["tm_create"]
    row = await Conversation.select().where(Conversation.id == conversation["id"]).first()
    assert json.loads(row["last_message"])["id"] == str(message["id"])
    assert row["tm_last_message"] == message["tm_create"]
    # No flow for an owned conversation.
    assert await Activeflow.count().where(Activeflow.conversation_id == conversation["id"]) == runs_before

    events = (
        await Event.select()
        .where(Event.customer_id == tenant.customer_id, Event.conversation_id == conversation["id"])
        .order_by(Event.seq)
    )
    last_two = events[-2:]
    assert [e["type"] for e in last_two] == ["conversation_message_created", "conversation_message_received"]
    assert {e["owner_id"] for e in last_two} == {tenant.agent.id}
    created, received = (json.loads(e["data"]) for e in last_two)
    assert created["id"] == str(message["id"])
    assert created["conversation_id"] == str(conversation["id"])
    assert created["participant_id"] == str(participant["id"])
    assert created["text"] == "owned hello"
    assert received["conversation_id"] == str(conversation["id"])
    assert received["message"] == created
    # The same message as the API shows it.
    api = (
        await client.get(f"/v1.0/conversations/{conversation['id']}/messages", headers=tenant.admin.headers)
    ).json()
    shown = next(m for m in api["result"] if m["id"] == str(message["id"]))
    assert {k: shown[k] for k in created} == created


async def test_concurrent_duplicates_to_an_owned_room_store_one_message(client):
    tenant = await make_tenant()
    sender = "+14155550102"
    conversation = await open_owned_room(client, tenant, sender)
    params = sms_params(sender=sender, body="burst", sid="SM" + uuid.uuid4().hex)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    burst = await asyncio.gather(*[client.post(path, content=body, headers=headers) for _ in range(20)])
    assert {r.status_code for r in burst} == {200}
    assert await Message.count().where(Message.provider_message_id == params["MessageSid"]) == 1
    received = await Event.count().where(
        Event.conversation_id == conversation["id"], Event.type == "conversation_message_received"
    )
    assert received == 2  # the first message and this one


async def test_concurrent_messages_to_an_owned_room_keep_event_order(client):
    tenant = await make_tenant()
    sender = "+14155550103"
    conversation = await open_owned_room(client, tenant, sender)
    responses = await asyncio.gather(*[post(client, tenant, sender=sender, body=f"m{i}") for i in range(30)])
    assert {r.status_code for r in responses} == {200}
    events = await message_events(conversation["id"])

    # The first message's run may have replied (with a worker in the session): inbound only.
    def inbound_message(event) -> dict:
        data = json.loads(event["data"])
        return data["message"] if event["type"] == "conversation_message_received" else data

    events = [e for e in events if inbound_message(e)["direction"] == "incoming"]
    assert len(events) == 2 * 31
    # Each message's two events are adjacent: created, then received, message after message.
    pairs = list(zip(events[::2], events[1::2], strict=True))
    for created, received in pairs:
        assert (created["type"], received["type"]) == (
            "conversation_message_created",
            "conversation_message_received",
        )
        assert json.loads(received["data"])["message"]["id"] == json.loads(created["data"])["id"]
    latest = (
        await Message.select()
        .where(Message.conversation_id == conversation["id"])
        .order_by(Message.tm_create, ascending=False)
        .first()
    )
    row = await Conversation.select().where(Conversation.id == conversation["id"]).first()
    assert row["tm_last_message"] == latest["tm_create"]


async def test_unowned_room_with_a_flow_still_starts_one_run(client):
    tenant = await make_tenant()
    sender = "+14155550104"
    conversation = await open_owned_room(client, tenant, sender)
    await set_owner(client, tenant, conversation, uuid.UUID(int=0))  # nobody
    before = await Activeflow.count().where(Activeflow.conversation_id == conversation["id"])
    sid = "SM" + uuid.uuid4().hex
    assert (await post(client, tenant, sender=sender, body="unowned", sid=sid)).status_code == 200
    [message] = await Message.select().where(Message.provider_message_id == sid)
    runs = await Activeflow.select().where(Activeflow.message_id == message["id"])
    assert len(runs) == 1
    assert await Activeflow.count().where(Activeflow.conversation_id == conversation["id"]) == before + 1


async def test_a_running_activeflow_sends_the_message_down_the_general_path(client, monkeypatch):
    tenant = await make_tenant()
    sender = "+14155550105"
    conversation = await open_owned_room(client, tenant, sender)
    await Activeflow.update({Activeflow.status: "running"}).where(
        Activeflow.conversation_id == conversation["id"]
    )
    calls = []
    original = inbound_pg.store_in_owned_room

    async def spy(*args, **kwargs):
        outcome = await original(*args, **kwargs)
        calls.append(outcome[0])
        return outcome

    monkeypatch.setattr(inbound_pg, "store_in_owned_room", spy)
    sid = "SM" + uuid.uuid4().hex
    assert (await post(client, tenant, sender=sender, body="while running", sid=sid)).status_code == 200
    assert calls == ["elsewhere"]
    assert await Message.count().where(Message.provider_message_id == sid) == 1


async def test_a_changed_auth_token_takes_effect_at_once(client):
    tenant = await make_tenant()
    assert (await post(client, tenant, body="cached")).status_code == 200  # the account is cached now
    response = await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"token": "rotated-token"},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text
    assert (await post(client, tenant, body="old token")).status_code == 401
    assert (await post(client, tenant, token="rotated-token", body="new token")).status_code == 200
    response = await client.delete(f"/v1.0/accounts/{tenant.account['id']}", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    assert (await post(client, tenant, token="rotated-token", body="gone")).status_code == 404


async def test_a_connection_given_back_inside_a_transaction_is_reset(pg_engine, pg):
    """The pool skips asyncpg's reset query except for a connection left in a transaction."""
    pool = pg_engine.pool
    connection = await pool.acquire()
    await connection.execute("BEGIN")
    await connection.execute("SET LOCAL statement_timeout = '1234ms'")
    assert connection.is_in_transaction()
    await pool.release(connection)
    # Every connection the pool hands out now is outside any transaction.
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        assert not any(c.is_in_transaction() for c in held)
        assert {await c.fetchval("SHOW statement_timeout") for c in held} == {"0"}
    finally:
        for c in held:
            await pool.release(c)


async def test_hook_account_reads_are_shared_and_a_change_meanwhile_is_not_cached(client, monkeypatch):
    """Requests that find the hook account's cache entry expired share one query; a change made
    while that query runs (forget_cached) keeps its row out of the cache, so the next request
    reads the account again."""
    tenant = await make_tenant()
    account_id = tenant.account["id"]
    accounts.forget_cached()
    reads, release = [], asyncio.Event()
    original = accounts._read_hook_account

    async def slow_read(wanted, generation):
        reads.append(wanted)
        await release.wait()
        return await original(wanted, generation)

    monkeypatch.setattr(accounts, "_read_hook_account", slow_read)
    waiting = [asyncio.ensure_future(accounts.get_account_for_hook(account_id)) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert reads == [account_id]
    release.set()
    found = await asyncio.gather(*waiting)
    assert {row["id"] for row in found} == {account_id} and found[0]["token"] == tenant.auth_token
    assert len(reads) == 1 and account_id in accounts._hook_cache
    found[0]["token"] = "changed by a caller"  # each caller has its own copy
    assert (await accounts.get_account_for_hook(account_id))["token"] == tenant.auth_token

    accounts.forget_cached(account_id)
    release.clear()
    reading = asyncio.ensure_future(accounts.get_account_for_hook(account_id))
    await asyncio.sleep(0.01)
    accounts.forget_cached(account_id)  # a change lands while the read runs
    release.set()
    assert (await reading)["id"] == account_id
    assert account_id not in accounts._hook_cache
    assert (await accounts.get_account_for_hook(account_id))["id"] == account_id
    assert len(reads) == 3 and account_id in accounts._hook_cache


async def test_a_hook_account_read_inside_a_transaction_is_its_own_and_not_cached(client):
    from hub.db import current_engine, transaction
    from hub.tables import Account

    tenant = await make_tenant()
    account_id = tenant.account["id"]
    accounts.forget_cached()

    class Undo(Exception):
        pass

    try:
        async with transaction(current_engine()):
            await Account.update({Account.token: "uncommitted"}).where(Account.id == account_id)
            assert (await accounts.get_account_for_hook(account_id))["token"] == "uncommitted"
            raise Undo
    except Undo:
        pass
    assert account_id not in accounts._hook_cache
    assert (await accounts.get_account_for_hook(account_id))["token"] == tenant.auth_token


async def until(condition) -> None:
    """Within 5 s: far less than the 600 s the cache tests give an entry."""
    await wait_for(condition, within=5, interval=0.01)


async def test_an_account_change_in_another_process_reaches_this_ones_cache_at_once(pg, monkeypatch):
    """Several API processes (HUB_HTTP_WORKERS, replicas): another process's change is announced
    by NOTIFY and drops this process's entry long before the entry would expire; a lost listening
    connection drops every entry and listens again."""
    monkeypatch.setattr(accounts, "HOOK_CACHE_S", 600.0)  # only the notice can drop the entry
    tenant = await make_tenant()
    account_id = tenant.account["id"]
    listener = accounts.AccountChanges(pg)
    listener.start()
    other = await pg.get_new_connection()  # the other process's connection
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        assert (await accounts.get_account_for_hook(account_id))["token"] == tenant.auth_token
        assert account_id in accounts._hook_cache
        # What the other process's update_account writes and announces.
        await other.execute("UPDATE accounts SET token = 'rotated' WHERE id = $1", account_id)
        await other.execute("SELECT pg_notify($1, $2)", accounts.ACCOUNT_CHANGES, str(account_id))
        await until(lambda: account_id not in accounts._hook_cache)
        assert (await accounts.get_account_for_hook(account_id))["token"] == "rotated"

        # The listening connection is lost (a PostgreSQL restart, a network cut).
        assert account_id in accounts._hook_cache
        first = listener.connection.get_server_pid()
        await other.execute("SELECT pg_terminate_backend($1)", first)
        await until(lambda: account_id not in accounts._hook_cache)
        await until(lambda: listener.listening.is_set() and listener.connection.get_server_pid() != first)
        await accounts.get_account_for_hook(account_id)
        await other.execute("SELECT pg_notify($1, $2)", accounts.ACCOUNT_CHANGES, str(account_id))
        await until(lambda: account_id not in accounts._hook_cache)
    finally:
        await listener.stop()
        await other.close()
    assert listener.connection is None


async def test_the_api_listens_for_account_changes(client, pg):
    """The app (served by uvicorn in the tests' loop) holds a connection that LISTENs."""
    other = await pg.get_new_connection()

    async def listening() -> int:
        return await other.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = $1",
            f'LISTEN "{accounts.ACCOUNT_CHANGES}"',
        )

    try:
        await wait_for(listening, within=5, interval=0.01)
    finally:
        await other.close()


async def test_update_and_delete_account_announce_the_change(pg):
    tenant = await make_tenant()
    account_id = tenant.account["id"]
    heard: list[str] = []
    other = await pg.get_new_connection()
    await other.add_listener(accounts.ACCOUNT_CHANGES, lambda *args: heard.append(args[-1]))
    try:
        await accounts.update_account(tenant.customer_id, account_id, {"token": "rotated"})
        await until(lambda: heard == [str(account_id)])
        await accounts.delete_account(tenant.customer_id, account_id)
        await until(lambda: heard == [str(account_id)] * 2)
    finally:
        await other.close()


# --- group commit (hub/group_commit.py): messages arriving together share one statement ------


def spy_batches(monkeypatch, fail: bool = False) -> list[list[str]]:
    """Records each batch statement's outcomes; with `fail`, each batch is written and then
    rolled back with an error (as a deadlock or a dropped connection would end it)."""
    batches: list[list[str]] = []
    original = inbound_pg.store_many_in_owned_rooms

    async def spy(conn, writes):
        if not fail:
            outcomes = await original(conn, writes)
            batches.append([o[0] for o in outcomes])
            return outcomes
        async with conn.transaction():
            outcomes = await original(conn, writes)
            batches.append([o[0] for o in outcomes])
            raise RuntimeError("the batch is lost after its statement")

    monkeypatch.setattr(inbound_pg, "store_many_in_owned_rooms", spy)
    return batches


async def check_burst_stored(tenant, rooms: dict[str, dict], sids: dict[str, list[str]]) -> None:
    """Every sid once, each room's events in message order (created then received, per message),
    its last message the latest, its participant active as of its latest message or later."""
    for sender, conversation in rooms.items():
        for sid in set(sids[sender]):
            assert await Message.count().where(Message.provider_message_id == sid) == 1, sid
        stored = (
            await Message.select()
            .where(Message.conversation_id == conversation["id"], Message.direction == "incoming")
            .order_by(Message.tm_create)
        )
        assert len(stored) == 1 + len(set(sids[sender]))  # the room's first message and the burst
        events = await message_events(conversation["id"])
        inbound_events = []
        for event in events:
            data = json.loads(event["data"])
            message = data["message"] if event["type"] == "conversation_message_received" else data
            if message["direction"] == "incoming":
                inbound_events.append((event["type"], message["id"], data))
        assert [(t, m) for t, m, _ in inbound_events] == [
            (kind, str(m["id"]))
            for m in stored
            for kind in ("conversation_message_created", "conversation_message_received")
        ]
        for _, _, data in inbound_events:
            assert data["conversation_id"] == str(conversation["id"])  # the room's id, not a placeholder
        row = await Conversation.select().where(Conversation.id == conversation["id"]).first()
        assert row["tm_last_message"] == stored[-1]["tm_create"]
        assert json.loads(row["last_message"])["id"] == str(stored[-1]["id"])
        [participant] = await Participant.select().where(Participant.conversation_id == conversation["id"])
        # (a resent message touches it too, as on the one-message path)
        assert participant["tm_last_active"] >= stored[-1]["tm_create"]
        assert {m["participant_id"] for m in stored} == {participant["id"]}


async def burst(client, tenant, senders: list[str], per_room: int) -> tuple[list, dict[str, list[str]]]:
    """`per_room` messages from each sender at once, interleaved, each room's 1st sid posted twice."""
    posts, sids = [], {sender: [] for sender in senders}
    for i in range(per_room):
        for sender in senders:
            sid = sids[sender][0] if i == per_room - 1 else "SM" + uuid.uuid4().hex
            sids[sender].append(sid)
            posts.append(post(client, tenant, sender=sender, body=f"{sender} {i}", sid=sid))
    return await asyncio.gather(*posts), sids


async def test_a_burst_to_owned_rooms_is_group_committed_with_each_messages_outcome(client, monkeypatch):
    tenant = await make_tenant()
    senders = ["+14155550111", "+14155550112", "+14155550113"]
    rooms = {sender: await open_owned_room(client, tenant, sender) for sender in senders}
    batches = spy_batches(monkeypatch)
    responses, sids = await burst(client, tenant, senders, per_room=15)
    assert {r.status_code for r in responses} == {200}
    assert max(len(b) for b in batches) > 1  # messages did share statements
    outcomes = [o for b in batches for o in b]
    assert outcomes.count("duplicate") <= len(senders)  # a resent sid in the same batch as its first
    await check_burst_stored(tenant, rooms, sids)


async def test_a_failed_group_commit_writes_each_message_alone_and_once(client, monkeypatch):
    tenant = await make_tenant()
    senders = ["+14155550114", "+14155550115"]
    rooms = {sender: await open_owned_room(client, tenant, sender) for sender in senders}
    batches = spy_batches(monkeypatch, fail=True)
    responses, sids = await burst(client, tenant, senders, per_room=12)
    assert {r.status_code for r in responses} == {200}
    assert batches and max(len(b) for b in batches) > 1  # batches were tried, and undone
    await check_burst_stored(tenant, rooms, sids)


async def test_a_batch_leaves_a_room_that_may_start_a_flow_to_the_general_path(client, monkeypatch):
    tenant = await make_tenant()
    owned, unowned = "+14155550116", "+14155550117"
    rooms = {owned: await open_owned_room(client, tenant, owned)}
    free = await open_owned_room(client, tenant, unowned)
    await set_owner(client, tenant, free, uuid.UUID(int=0))  # nobody
    batches = spy_batches(monkeypatch)
    responses, sids = await burst(client, tenant, [owned, unowned], per_room=10)
    assert {r.status_code for r in responses} == {200}
    assert "elsewhere" in [o for b in batches for o in b]
    await check_burst_stored(tenant, rooms, {owned: sids[owned]})
    for sid in set(sids[unowned]):
        [message] = await Message.select().where(Message.provider_message_id == sid)
        assert message["conversation_id"] == free["id"]
