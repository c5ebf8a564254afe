"""The conversation list's own statement (hub/list_pg.py on PostgreSQL) and row conversion
(hub.models.listed_conversation_out) answer exactly what the Piccolo query and `conversation_out`
answer: the same conversations in the same order, the same JSON, the same page tokens, the same
400s, for every filter alone and combined, on every page; on both databases. And the caller's
agent read of every request (hub.agents.get_token_agent), and the API's settled heap."""

from __future__ import annotations

import gc
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from api.app import create_app
from hub import accounts, agents, conversations, pagination
from hub.conversations import ListFilters, list_query_parts
from hub.errors import BadRequest
from hub.inbound import store_inbound
from hub.models import conversation_out
from hub.pagination import encode_token, fetch_page
from hub.tables import Conversation, ConversationTag
from tests.helpers import make_tenant
from tests.integration.test_repository_engines import inbound

LINE_USER = "U" + "0123456789abcdef" * 2


async def reference_page(customer_id, owner_id, page_size, page_token, filters):
    """The list as the hub built it before its own statement: Piccolo's query, conversation_out."""
    conditions, order = list_query_parts(customer_id, owner_id, filters)
    rows, token = await fetch_page(Conversation, conditions, page_size, page_token, order)
    return [conversation_out(r) for r in rows], token


async def walk(listing, customer_id, owner_id, page_size, filters) -> list[tuple[bytes, str]]:
    pages, token = [], ""
    for _ in range(100):
        result, token = await listing(customer_id, owner_id, page_size, token, filters)
        pages.append((msgspec.json.encode(result), token))
        if not token:
            return pages
    raise AssertionError("pagination did not end")


async def varied_conversations(tenant) -> dict:
    """Conversations of two accounts and both types, owned and not, open and closed, tagged, with
    and without a last message, one deleted, two pairs sharing a creation time (the keyset's tie)."""
    line = await accounts.create_account(
        tenant.customer_id, {"type": "line", "name": "LINE", "secret": "s" * 32, "token": "t" * 48}
    )
    rows = []
    for i in range(14):
        rows.append((await store_inbound(inbound(tenant.account, peer=f"+1415999{i:04d}"))).conversation)
    for i in range(4):
        message = inbound(line, peer=f"{LINE_USER[:-2]}{i:02d}", peer_type="line")
        rows.append((await store_inbound(message)).conversation)
    ids = [r["id"] for r in rows]
    for n, conversation_id in enumerate(ids):
        values: dict = {"tags": ["vip", f"topic-{n % 3}"] if n % 4 == 0 else [f"topic-{n % 3}"]}
        if n % 3 == 0:
            values["owner_id"] = tenant.agent.id
        await conversations.update_conversation(tenant.customer_id, conversation_id, values)
    closed_at = datetime.now(UTC)
    await Conversation.update(
        {Conversation.status: "closed", Conversation.tm_closed: closed_at, Conversation.closed_reason: "api"}
    ).where(Conversation.id.is_in(ids[::5]))
    await Conversation.update({Conversation.last_message: "", Conversation.tm_last_message: None}).where(
        Conversation.id == ids[2]
    )
    await Conversation.update({Conversation.previous_conversation_id: ids[0]}).where(
        Conversation.id == ids[7]
    )
    # Ties: equal list keys, told apart by id (tag rows carry their conversation's key).
    tie = datetime.now(UTC) - timedelta(days=1)
    for pair in ((ids[3], ids[4]), (ids[8], ids[9], ids[16])):
        await Conversation.update({Conversation.tm_create: tie}).where(Conversation.id.is_in(list(pair)))
        await ConversationTag.update({ConversationTag.tm_create: tie}).where(
            ConversationTag.conversation_id.is_in(list(pair))
        )
        tie -= timedelta(hours=1)
    await conversations.delete_conversation(tenant.customer_id, ids[6])
    return {"line": line, "ids": ids}


async def test_every_filter_and_page_matches_the_piccolo_query(any_engine):
    tenant = await make_tenant()
    made = await varied_conversations(tenant)
    other = await make_tenant()
    await store_inbound(inbound(other.account, peer="+14159990000"))  # another tenant's, same peer

    accounts_ = [None, tenant.account["id"], made["line"]["id"]]
    statuses = [None, "open", "closed"]
    types = [None, "message", "line"]
    tags = [None, "VIP", "topic-1"]
    peers = [None, "(415) 999-0000", LINE_USER[:-2] + "01"]
    owners = [None, tenant.agent.id]
    compared = 0
    for owner, status, account_id, type_, tag, peer in itertools.product(
        owners, statuses, accounts_, types, tags, peers
    ):
        filters = ListFilters(status=status, tag=tag, account_id=account_id, type=type_, peer=peer)
        for page_size in (100, 4) if peer is None else (100,):
            expected = await walk(reference_page, tenant.customer_id, owner, page_size, filters)
            got = await walk(conversations.list_page, tenant.customer_id, owner, page_size, filters)
            assert got == expected, (owner, filters, page_size)
            compared += 1
    # The comparison saw the data: the lists are not all empty, and some span pages.
    everything = await walk(conversations.list_page, tenant.customer_id, None, 4, ListFilters())
    assert len(everything) == 5 and compared > 500
    listed = [c for page, _ in everything for c in msgspec.json.decode(page)]
    assert len(listed) == 17 and made["ids"][6] not in {uuid.UUID(c["id"]) for c in listed}
    assert any(c["status"] == "closed" and c["tm_closed"] for c in listed)
    assert any(c["last_message"] is None for c in listed) and any(c["last_message"] for c in listed)
    assert any(c["previous_conversation_id"] for c in listed)
    assert {c["type"] for c in listed} == {"message", "line"}


async def test_rows_are_listed_like_conversation_out(any_engine):
    """`list_conversations` (the rows) and `list_page` (their public form) agree with each other."""
    tenant = await make_tenant()
    await varied_conversations(tenant)
    rows, token = await conversations.list_conversations(tenant.customer_id, None, 10, "")
    outs, same_token = await conversations.list_page(tenant.customer_id, None, 10, "")
    assert token == same_token and len(rows) == 10
    assert msgspec.json.encode([conversation_out(r) for r in rows]) == msgspec.json.encode(outs)


async def test_bad_values_are_the_same_400_in_the_same_order(any_engine):
    tenant = await make_tenant()
    token = encode_token(datetime.now(UTC), uuid.uuid4())
    cases = [
        (ListFilters(tag="Not valid!", status="archived"), 10, ""),
        (ListFilters(status="archived", type="fax"), 10, ""),
        (ListFilters(type="fax", peer="   "), 10, ""),
        (ListFilters(peer="   "), 0, "garbage"),
        (ListFilters(status="open"), 101, "garbage"),
        (ListFilters(tag="vip"), 10, "garbage"),
        (ListFilters(), 10, "WyJ4Il0"),
    ]
    for filters, page_size, page_token in cases:
        with pytest.raises(BadRequest) as expected:
            await reference_page(tenant.customer_id, None, page_size, page_token, filters)
        with pytest.raises(BadRequest) as got:
            await conversations.list_page(tenant.customer_id, None, page_size, page_token, filters)
        assert str(got.value) == str(expected.value), filters
    # A valid token of a row that does not exist pages from its place like any other.
    assert await conversations.list_page(tenant.customer_id, None, 10, token) == ([], "")


async def test_postgres_lists_through_its_own_statement(pg, monkeypatch):
    """On PostgreSQL neither Piccolo's page query nor its select builds the list (SQLite keeps
    them: the tests above run there too)."""
    tenant = await make_tenant()
    await varied_conversations(tenant)

    def refuse(*args, **kwargs):
        raise AssertionError("the PostgreSQL list went through Piccolo")

    monkeypatch.setattr(pagination, "page_query", refuse)
    monkeypatch.setattr(conversations, "fetch_page", refuse)
    monkeypatch.setattr(Conversation, "select", refuse)
    result, token = await conversations.list_page(
        tenant.customer_id, tenant.agent.id, 1, "", ListFilters(tag="vip")
    )
    assert len(result) == 1 and token
    later, last = await conversations.list_page(
        tenant.customer_id, tenant.agent.id, 1, token, ListFilters(tag="vip")
    )
    assert len(later) == 1 and later[0].id != result[0].id and not last
    result += later
    assert all("vip" in c.tags and c.owner_id == tenant.agent.id for c in result)


async def test_token_agent_is_the_live_agent(any_engine):
    tenant = await make_tenant()
    agent = await agents.get_token_agent(tenant.admin.id)
    assert agent == {
        "id": tenant.admin.id,
        "customer_id": tenant.customer_id,
        "permission": 0x20,
        "token_version": 0,
    }
    await agents.update_agent(tenant.customer_id, tenant.agent.id, {"password": "a-new-password-123"})
    assert (await agents.get_token_agent(tenant.agent.id))["token_version"] == 1
    await agents.delete_agent(tenant.customer_id, tenant.agent.id)
    assert await agents.get_token_agent(tenant.agent.id) is None
    assert await agents.get_token_agent(uuid.uuid4()) is None


async def test_api_start_up_moves_its_heap_out_of_the_collectors_reach(settings, pg):
    """A full collection would otherwise walk every object start-up made, pausing the requests in
    flight (api.app.settle_heap)."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = create_app(settings)
    async with app.lifespan():
        assert gc.get_freeze_count() > 50_000
    gc.unfreeze()
