"""Repository-level rules, each run on PostgreSQL and on SQLite (the `any_engine` fixture).

Room matching, dedupe, concurrency, auto titles, conversation permissions and pagination are
exercised through the domain functions directly, without the HTTP layer."""

from __future__ import annotations

import asyncio
import secrets
import uuid

import msgspec
import pytest

from hub import accounts, agents, contacts, conversations
from hub.addresses import Address
from hub.errors import BadRequest, Conflict, Forbidden, NotFound
from hub.inbound import InboundMessage, InboundResult, store_inbound
from hub.models import conversation_out
from hub.permissions import NIL_UUID
from hub.tables import Conversation, Event, Message
from tests.helpers import make_tenant

ALICE = "+14155551234"
LINE_USER_ID = "U" + "0123456789abcdef" * 2


def inbound(
    account: dict,
    peer: str = ALICE,
    text: str = "hello",
    provider_message_id: str | None = None,
    peer_type: str = "tel",
    peer_display_name: str = "",
) -> InboundMessage:
    return InboundMessage(
        account=account,
        peer=Address(type=peer_type, target=peer),
        self_address=Address(type=peer_type, target=account["number"], name=account["name"]),
        provider_message_id=provider_message_id or "SM" + uuid.uuid4().hex,
        text=text,
        peer_display_name=peer_display_name,
    )


async def conversations_of(customer_id) -> list[dict]:
    return await Conversation.select().where(Conversation.customer_id == customer_id)


async def message_count(conversation_id) -> int:
    return await Message.count().where(Message.conversation_id == conversation_id)


async def event_types(customer_id) -> list[str]:
    return (
        await Event.select(Event.type)
        .where(Event.customer_id == customer_id)
        .order_by(Event.seq)
        .output(as_list=True)
    )


# ----------------------------------------------------------------------------------- room matching


async def test_same_peer_twice_joins_one_conversation(any_engine):
    tenant = await make_tenant()
    first = await store_inbound(inbound(tenant.account, text="one"))
    second = await store_inbound(inbound(tenant.account, text="two"))

    assert (first.conversation_created, second.conversation_created) == (True, False)
    assert (first.duplicate, second.duplicate) == (False, False)
    assert first.conversation["id"] == second.conversation["id"]
    [row] = await conversations_of(tenant.customer_id)
    assert row["id"] == first.conversation["id"]
    assert (row["type"], row["peer_target"], row["self_target"]) == ("message", ALICE, "+15550001000")
    assert row["owner_type"] == "" and row["owner_id"] == NIL_UUID
    assert await message_count(row["id"]) == 2
    texts = (
        await Message.select(Message.text).where(Message.conversation_id == row["id"]).output(as_list=True)
    )
    assert sorted(texts) == ["one", "two"]
    assert (await event_types(tenant.customer_id)).count("conversation_created") == 1


async def test_different_peer_account_or_customer_opens_another_conversation(any_engine):
    tenant = await make_tenant()
    base = await store_inbound(inbound(tenant.account))
    other_peer = await store_inbound(inbound(tenant.account, peer="+14155550000"))
    assert other_peer.conversation_created
    assert other_peer.conversation["id"] != base.conversation["id"]

    # Same peer, second number of the same customer: its own room.
    second_account = await accounts.create_account(
        tenant.customer_id, {"type": "sms", "name": "Second", "number": "+15550002000", "token": "t"}
    )
    other_account = await store_inbound(inbound(second_account))
    assert other_account.conversation_created
    assert other_account.conversation["id"] not in {base.conversation["id"], other_peer.conversation["id"]}
    assert len(await conversations_of(tenant.customer_id)) == 3

    # Same peer and same number at another customer: never the first customer's room.
    stranger = await make_tenant()
    theirs = await store_inbound(inbound(stranger.account))
    assert theirs.conversation_created
    assert theirs.conversation["customer_id"] == stranger.customer_id
    assert len(await conversations_of(tenant.customer_id)) == 3
    assert len(await conversations_of(stranger.customer_id)) == 1


async def test_deleted_conversation_never_matches(any_engine):
    tenant = await make_tenant()
    first = await store_inbound(inbound(tenant.account, text="before"))
    deleted = await conversations.delete_conversation(tenant.customer_id, first.conversation["id"])
    assert deleted["tm_delete"] is not None

    again = await store_inbound(inbound(tenant.account, text="after"))
    assert again.conversation_created
    assert again.conversation["id"] != first.conversation["id"]
    assert again.conversation["tm_delete"] is None
    assert await message_count(first.conversation["id"]) == 1
    assert await message_count(again.conversation["id"]) == 1

    rows = await conversations_of(tenant.customer_id)
    assert len(rows) == 2
    [live] = [r for r in rows if r["tm_delete"] is None]
    assert live["id"] == again.conversation["id"]
    # And a third message joins the new room, not the deleted one.
    third = await store_inbound(inbound(tenant.account, text="later"))
    assert not third.conversation_created and third.conversation["id"] == live["id"]
    with pytest.raises(NotFound):
        await conversations.get_conversation(tenant.customer_id, first.conversation["id"])
    page, _ = await conversations.list_conversations(tenant.customer_id, None, 100, "")
    assert [r["id"] for r in page] == [live["id"]]


async def test_duplicate_provider_message_id_stores_one_message(any_engine):
    tenant = await make_tenant()
    sid = "SMdup" + uuid.uuid4().hex
    first = await store_inbound(inbound(tenant.account, text="original", provider_message_id=sid))
    retry = await store_inbound(inbound(tenant.account, text="retried", provider_message_id=sid))

    assert (first.duplicate, retry.duplicate) == (False, True)
    assert retry.conversation_created is False
    assert retry.message["id"] == first.message["id"]
    assert retry.conversation["id"] == first.conversation["id"]
    rows = await Message.select().where(Message.provider_message_id == sid)
    assert len(rows) == 1 and rows[0]["text"] == "original"
    assert (await event_types(tenant.customer_id)).count("conversation_message_received") == 1

    # The same provider id on another account is another message.
    second_account = await accounts.create_account(
        tenant.customer_id, {"type": "sms", "name": "Second", "number": "+15550002000", "token": "t"}
    )
    other = await store_inbound(inbound(second_account, provider_message_id=sid))
    assert other.duplicate is False
    assert await Message.count().where(Message.provider_message_id == sid) == 2


async def test_concurrent_duplicates_store_one_message(any_engine):
    tenant = await make_tenant()
    sid = "SMburst" + uuid.uuid4().hex
    results: list[InboundResult] = await asyncio.gather(
        *[
            store_inbound(inbound(tenant.account, peer="+14155557777", provider_message_id=sid))
            for _ in range(8)
        ]
    )
    assert [r.duplicate for r in results].count(False) == 1
    assert len({r.message["id"] for r in results}) == 1
    assert len({r.conversation["id"] for r in results}) == 1
    assert await Message.count().where(Message.provider_message_id == sid) == 1
    assert len(await conversations_of(tenant.customer_id)) == 1
    types = await event_types(tenant.customer_id)
    assert types.count("conversation_created") == 1
    assert types.count("conversation_message_received") == 1


async def test_ten_concurrent_first_messages_make_one_conversation(any_engine):
    tenant = await make_tenant()
    peer = "+1415555" + f"{secrets.randbelow(10_000):04d}"
    results: list[InboundResult] = await asyncio.gather(
        *[store_inbound(inbound(tenant.account, peer=peer, text=f"m{i}")) for i in range(10)]
    )
    assert not any(r.duplicate for r in results)
    assert [r.conversation_created for r in results].count(True) == 1
    assert len({r.conversation["id"] for r in results}) == 1
    assert len({r.message["id"] for r in results}) == 10

    [row] = await conversations_of(tenant.customer_id)
    assert await message_count(row["id"]) == 10
    texts = (
        await Message.select(Message.text).where(Message.conversation_id == row["id"]).output(as_list=True)
    )
    assert sorted(texts) == sorted(f"m{i}" for i in range(10))
    types = await event_types(tenant.customer_id)
    assert types.count("conversation_created") == 1
    assert types.count("conversation_message_created") == 10
    assert types.count("conversation_message_received") == 10


# ------------------------------------------------------------------------------------- auto titles


async def test_sms_titles_from_contacts_numbers_and_nothing(any_engine):
    tenant = await make_tenant()
    await contacts.create_contact(
        tenant.customer_id, "Alice", "", [{"type": "tel", "target": "+1 415-555-1234"}]
    )

    named = await store_inbound(inbound(tenant.account, peer=ALICE))
    assert named.conversation["name"] == "SMS \u00b7 Alice (+14155551234)"
    assert named.conversation["name"].encode() == b"SMS \xc2\xb7 Alice (+14155551234)"
    assert named.conversation["detail"] == "SMS conversation"
    assert conversation_out(named.conversation).peer.target_name == "Alice"

    number_only = await store_inbound(inbound(tenant.account, peer="+14155559999"))
    assert number_only.conversation["name"] == "SMS \u00b7 +14155559999"
    assert number_only.conversation["detail"] == "SMS conversation"

    nothing = await store_inbound(inbound(tenant.account, peer=""))
    assert nothing.conversation["name"] == "SMS \u00b7 Unknown"
    assert nothing.conversation["detail"] == "SMS conversation"

    stored = {r["peer_target"]: r["name"] for r in await conversations_of(tenant.customer_id)}
    assert stored == {
        ALICE: "SMS \u00b7 Alice (+14155551234)",
        "+14155559999": "SMS \u00b7 +14155559999",
        "": "SMS \u00b7 Unknown",
    }


async def test_contacts_of_other_customers_and_deleted_contacts_name_nobody(any_engine):
    tenant = await make_tenant()
    stranger = await make_tenant()
    await contacts.create_contact(stranger.customer_id, "Mallory", "", [{"type": "tel", "target": ALICE}])
    gone = await contacts.create_contact(tenant.customer_id, "Gone", "", [{"type": "tel", "target": ALICE}])
    await contacts.delete_contact(tenant.customer_id, gone.id)

    result = await store_inbound(inbound(tenant.account, peer=ALICE))
    assert result.conversation["name"] == "SMS \u00b7 +14155551234"


async def test_first_matching_contact_names_the_peer(any_engine):
    tenant = await make_tenant()
    await contacts.create_contact(
        tenant.customer_id,
        "Bob",
        "",
        [{"type": "email", "target": "bob@example.com"}, {"type": "tel", "target": "(415) 555-1234"}],
    )
    # Since participants an address belongs to one live contact: a second one claiming it is 409
    # (contract section 8), so the first contact keeps naming the peer.
    with pytest.raises(Conflict):
        await contacts.create_contact(tenant.customer_id, "Robert", "", [{"type": "tel", "target": ALICE}])
    result = await store_inbound(inbound(tenant.account, peer=ALICE))
    assert result.conversation["name"] == "SMS \u00b7 Bob (+14155551234)"


async def test_line_titles_use_display_name_never_the_user_id(any_engine):
    tenant = await make_tenant()
    line = await accounts.create_account(
        tenant.customer_id, {"type": "line", "name": "LINE channel", "secret": "s", "token": "t"}
    )
    known = await store_inbound(
        inbound(line, peer=LINE_USER_ID, peer_type="line", peer_display_name="Alice", provider_message_id="1")
    )
    assert known.conversation["type"] == "line"
    assert known.conversation["name"] == "LINE \u00b7 Alice"
    assert known.conversation["detail"] == "LINE conversation"

    anonymous_id = "U" + "f" * 32
    unknown = await store_inbound(inbound(line, peer=anonymous_id, peer_type="line", provider_message_id="2"))
    assert unknown.conversation["name"] == "LINE \u00b7 Unknown"
    for row, user_id in ((known.conversation, LINE_USER_ID), (unknown.conversation, anonymous_id)):
        assert user_id not in row["name"] and user_id not in row["detail"]
        # The room is still keyed by the LINE user id.
        assert row["peer_target"] == user_id


# ----------------------------------------------------------------------------------- permissions


async def assigned_conversation(tenant) -> dict:
    result = await store_inbound(
        inbound(tenant.account, peer="+1415555" + f"{secrets.randbelow(10_000):04d}")
    )
    row = await conversations.update_conversation(
        tenant.customer_id, result.conversation["id"], {"owner_id": tenant.agent.id}
    )
    assert (row["owner_type"], row["owner_id"]) == ("agent", tenant.agent.id)
    return row


async def test_plain_non_owner_cannot_unassign(any_engine):
    tenant = await make_tenant()
    row = await assigned_conversation(tenant)
    before = await event_types(tenant.customer_id)
    with pytest.raises(Forbidden):
        await conversations.unassign(tenant.customer_id, row["id"], tenant.other_agent.id, 0)
    still = await conversations.get_conversation(tenant.customer_id, row["id"])
    assert (still["owner_type"], still["owner_id"]) == ("agent", tenant.agent.id)
    assert await event_types(tenant.customer_id) == before


async def test_owner_can_unassign_and_event_carries_new_owner(any_engine):
    tenant = await make_tenant()
    row = await assigned_conversation(tenant)
    before = await Event.count().where(Event.customer_id == tenant.customer_id)
    done = await conversations.unassign(tenant.customer_id, row["id"], tenant.agent.id, 0)
    assert (done["owner_type"], done["owner_id"]) == ("", NIL_UUID)
    stored = await conversations.get_conversation(tenant.customer_id, row["id"])
    assert (stored["owner_type"], stored["owner_id"]) == ("", NIL_UUID)

    new_events = await Event.select().where(Event.customer_id == tenant.customer_id).order_by(Event.seq)
    [event] = new_events[before:]
    assert event["type"] == "conversation_updated"
    data = msgspec.json.decode(event["data"])
    assert (data["owner_type"], data["owner_id"]) == ("", str(NIL_UUID))

    # Once unassigned, the former owner (a plain agent) may no longer unassign it.
    with pytest.raises(Forbidden):
        await conversations.unassign(tenant.customer_id, row["id"], tenant.agent.id, 0)


@pytest.mark.parametrize("role", ["admin", "manager"])
async def test_admin_and_manager_can_unassign_any_conversation(any_engine, role):
    tenant = await make_tenant()
    row = await assigned_conversation(tenant)
    caller = getattr(tenant, role)
    permission = (await agents.get_agent(tenant.customer_id, caller.id))["permission"]
    done = await conversations.unassign(tenant.customer_id, row["id"], caller.id, permission)
    assert (done["owner_type"], done["owner_id"]) == ("", NIL_UUID)


async def test_update_conversation_with_unknown_or_foreign_agent_is_the_same_bad_request(any_engine):
    tenant = await make_tenant()
    stranger = await make_tenant()
    row = (await store_inbound(inbound(tenant.account))).conversation
    deleted = await agents.create_agent(tenant.customer_id, "gone-" + uuid.uuid4().hex[:8], "password-123")
    await agents.delete_agent(tenant.customer_id, deleted["id"])

    messages = []
    for owner_id in (uuid.uuid4(), stranger.agent.id, stranger.admin.id, deleted["id"]):
        with pytest.raises(BadRequest) as info:
            await conversations.update_conversation(tenant.customer_id, row["id"], {"owner_id": owner_id})
        messages.append(info.value.message)
    assert len(set(messages)) == 1
    assert str(stranger.agent.id) not in messages[0]

    after = await conversations.get_conversation(tenant.customer_id, row["id"])
    assert (after["owner_type"], after["owner_id"]) == ("", NIL_UUID)
    assert "conversation_updated" not in await event_types(tenant.customer_id)


async def test_update_conversation_derives_owner_type_and_keeps_other_fields(any_engine):
    tenant = await make_tenant()
    row = (await store_inbound(inbound(tenant.account))).conversation

    named = await conversations.update_conversation(
        tenant.customer_id, row["id"], {"name": "VIP", "owner_type": "agent"}
    )
    assert (named["name"], named["detail"], named["owner_type"]) == ("VIP", "SMS conversation", "")

    assigned = await conversations.update_conversation(
        tenant.customer_id, row["id"], {"owner_id": tenant.agent.id, "owner_type": ""}
    )
    assert (assigned["owner_type"], assigned["owner_id"], assigned["name"]) == (
        "agent",
        tenant.agent.id,
        "VIP",
    )

    cleared = await conversations.update_conversation(tenant.customer_id, row["id"], {"owner_id": NIL_UUID})
    assert (cleared["owner_type"], cleared["owner_id"]) == ("", NIL_UUID)


async def test_other_customers_conversations_are_not_found(any_engine):
    tenant = await make_tenant()
    stranger = await make_tenant()
    row = (await store_inbound(inbound(tenant.account))).conversation
    sid = stranger.customer_id
    with pytest.raises(NotFound):
        await conversations.get_conversation(sid, row["id"])
    with pytest.raises(NotFound):
        await conversations.update_conversation(sid, row["id"], {"name": "stolen"})
    with pytest.raises(NotFound):
        await conversations.unassign(sid, row["id"], stranger.admin.id, 0x20)
    with pytest.raises(NotFound):
        await conversations.delete_conversation(sid, row["id"])
    unchanged = await conversations.get_conversation(tenant.customer_id, row["id"])
    assert unchanged["name"] == row["name"] and unchanged["tm_delete"] is None


async def test_deleting_an_agent_unassigns_its_conversations(any_engine):
    tenant = await make_tenant()
    row = await assigned_conversation(tenant)
    await agents.delete_agent(tenant.customer_id, tenant.agent.id)
    after = await conversations.get_conversation(tenant.customer_id, row["id"])
    assert (after["owner_type"], after["owner_id"]) == ("", NIL_UUID)
    assert await agents.get_active_agent(tenant.agent.id) is None


# ------------------------------------------------------------------------------------- pagination


async def walk(customer_id, owner_id, page_size: int) -> list[dict]:
    rows: list[dict] = []
    token = ""
    for _ in range(1000):
        page, token = await conversations.list_conversations(customer_id, owner_id, page_size, token)
        assert len(page) <= page_size
        rows.extend(page)
        if not token:
            return rows
        assert page, "a next_page_token must not lead to an empty page"
    raise AssertionError("pagination did not end")


async def test_pagination_walks_every_row_once_newest_first(any_engine):
    tenant = await make_tenant()
    created = []
    for i in range(23):
        created.append((await store_inbound(inbound(tenant.account, peer=f"+1415666{i:04d}"))).conversation)

    expected = {r["id"] for r in created}
    for page_size in (1, 5, 7, 23, 100):
        rows = await walk(tenant.customer_id, None, page_size)
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids)) == 23, page_size
        assert set(ids) == expected
        keys = [(r["tm_create"], str(r["id"])) for r in rows]
        assert keys == sorted(keys, reverse=True)
    # Newest first: the last stored is the first listed.
    first_page, token = await conversations.list_conversations(tenant.customer_id, None, 5, "")
    assert first_page[0]["id"] == created[-1]["id"]
    assert token


async def test_pagination_is_stable_under_concurrent_inserts_and_filters(any_engine):
    tenant = await make_tenant()
    originals = []
    for i in range(12):
        originals.append((await store_inbound(inbound(tenant.account, peer=f"+1415777{i:04d}"))).conversation)
    for row in originals[:4]:
        await conversations.update_conversation(tenant.customer_id, row["id"], {"owner_id": tenant.agent.id})
    await conversations.delete_conversation(tenant.customer_id, originals[4]["id"])

    seen: list = []
    token = ""
    inserted = 0
    while True:
        page, token = await conversations.list_conversations(tenant.customer_id, None, 3, token)
        seen.extend(r["id"] for r in page)
        # New rows arriving between pages are newer than the cursor: never repeated, never shifting.
        await store_inbound(inbound(tenant.account, peer=f"+1415888{inserted:04d}"))
        inserted += 1
        if not token:
            break
    assert len(seen) == len(set(seen))
    assert set(seen) == {r["id"] for r in originals} - {originals[4]["id"]}

    owned = await walk(tenant.customer_id, tenant.agent.id, 2)
    assert {r["id"] for r in owned} == {r["id"] for r in originals[:4]}
    assert len(owned) == 4
    assert await walk(tenant.customer_id, tenant.other_agent.id, 2) == []


async def test_bad_page_tokens_are_bad_request(any_engine):
    tenant = await make_tenant()
    for token in ("garbage", "WyJ4Il0", "!!"):
        with pytest.raises(BadRequest):
            await conversations.list_conversations(tenant.customer_id, None, 10, token)
    for size in (0, 101):
        with pytest.raises(BadRequest):
            await conversations.list_conversations(tenant.customer_id, None, size, "")
