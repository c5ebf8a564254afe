"""Who may assign, unassign and list conversations: every caller x operation cell is its own test."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from dataclasses import dataclass

import msgspec
import pytest

from hub import accounts, agents, db, participants
from hub.addresses import Address
from hub.permissions import ADMIN, MANAGER
from hub.tables import Conversation, Event
from tests.helpers import Member, Tenant, make_member, open_conversation

NIL = str(uuid.UUID(int=0))
HOME_NUMBER = "+15550001000"
FOREIGN_NUMBER = "+15550002000"


async def quick_tenant(number: str) -> Tenant:
    """Like helpers.make_tenant, with the four (Argon2-hashed, so slow) agents created concurrently."""
    customer = await agents.create_customer(f"customer-{uuid.uuid4().hex[:6]}")
    cid = customer["id"]
    auth_token = secrets.token_hex(16)
    account = await accounts.create_account(
        cid,
        {"type": "sms", "name": "Main line", "number": number, "sid": "AC" + "0" * 32, "token": auth_token},
    )
    admin, manager, agent, other = await asyncio.gather(
        make_member(cid, ADMIN, "admin"),
        make_member(cid, MANAGER, "manager"),
        make_member(cid, 0, "agent"),
        make_member(cid, 0, "other"),
    )
    return Tenant(cid, admin, manager, agent, other, account, auth_token)


async def new_conversation(client, tenant: Tenant) -> str:
    return str(await open_conversation(client, tenant))


async def db_row(conversation_id: str) -> dict:
    return await Conversation.select().where(Conversation.id == uuid.UUID(conversation_id)).first()


async def updated_events(conversation_id: str) -> list[tuple[str, str]]:
    rows = (
        await Event.select(Event.data)
        .where(Event.conversation_id == uuid.UUID(conversation_id), Event.type == "conversation_updated")
        .order_by(Event.seq)
    )
    return [(d["owner_type"], d["owner_id"]) for d in (msgspec.json.decode(r["data"]) for r in rows)]


@dataclass
class World:
    home: Tenant
    foreign: Tenant
    assigned: str  # home conversation owned by home.agent
    unassigned: str  # home conversation nobody owns
    foreign_conversation: str

    def caller(self, name: str) -> Member:
        return {
            "admin": self.home.admin,
            "manager": self.home.manager,
            "owner": self.home.agent,
            "other_agent": self.home.other_agent,
            "foreign_admin": self.foreign.admin,
        }[name]

    def another_agent_of(self, name: str) -> Member:
        """An agent id that is not the caller's own: the owner, or (for the owner) the other agent."""
        return self.home.other_agent if name == "owner" else self.home.agent


@pytest.fixture(scope="module")
async def foreign(app_client, pg_engine) -> tuple[Tenant, str]:
    """Another customer with one conversation of its own; no cell can change it, so it is shared."""
    db.use_engine(pg_engine)
    tenant = await quick_tenant(FOREIGN_NUMBER)
    return tenant, await new_conversation(app_client, tenant)


@pytest.fixture
async def world(client, foreign) -> World:
    """A fresh home customer per cell, with one conversation owned by its agent and one unowned."""
    home = await quick_tenant(HOME_NUMBER)
    assigned, unassigned = await asyncio.gather(
        new_conversation(client, home), new_conversation(client, home)
    )
    response = await client.put(
        f"/v1.0/conversations/{assigned}", json={"owner_id": str(home.agent.id)}, headers=home.admin.headers
    )
    assert response.status_code == 200, response.text
    assert (response.json()["owner_type"], response.json()["owner_id"]) == ("agent", str(home.agent.id))
    assert await updated_events(assigned) == [("agent", str(home.agent.id))]
    return World(home, foreign[0], assigned, unassigned, foreign[1])


CALLERS = ("admin", "manager", "owner", "other_agent", "foreign_admin")


def _row(admin, manager, owner, other_agent, foreign_admin) -> dict[str, int]:
    return dict(zip(CALLERS, (admin, manager, owner, other_agent, foreign_admin), strict=True))


EXPECTED: dict[str, dict[str, int]] = {
    "put": _row(200, 200, 403, 403, 404),
    "service_put": _row(200, 200, 403, 403, 404),
    "unassign": _row(200, 200, 200, 403, 404),
    "service_unassign": _row(200, 200, 200, 403, 404),
    "list_own_id": _row(200, 200, 200, 200, 200),
    "list_other_id": _row(200, 200, 403, 403, 200),
    "list_omitted": _row(200, 200, 403, 403, 200),
    "list_nil": _row(200, 200, 403, 403, 200),
    # Participants: any agent of the customer reads them; the owner or admin/manager change them.
    "participants_list": _row(200, 200, 200, 200, 404),
    "participants_add": _row(200, 200, 200, 403, 404),
    "participants_remove": _row(200, 200, 200, 403, 404),
}

CELLS = [
    pytest.param(op, caller, status, id=f"{op}-{caller}-{status}")
    for op, row in EXPECTED.items()
    for caller, status in row.items()
]

REASONS = {403: "forbidden", 404: "not_found"}


def assert_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert error["reason"] == REASONS[status]
    assert error["message"] and error["request_id"]


async def assert_untouched(world: World) -> None:
    row = await db_row(world.assigned)
    assert (row["owner_type"], row["owner_id"]) == ("agent", world.home.agent.id)
    assert row["name"] != "renamed"
    assert await updated_events(world.assigned) == [("agent", str(world.home.agent.id))]


@pytest.mark.parametrize(("op", "caller_name", "status"), CELLS)
async def test_permission_matrix(client, world: World, op: str, caller_name: str, status: int):
    caller = world.caller(caller_name)
    conv = world.assigned
    if op in ("put", "service_put"):
        prefix = "/v1.0/conversations" if op == "put" else "/v1.0/service_agents/conversations"
        # The caller tries to take the conversation for itself (an id valid in its own customer).
        body = {"owner_id": str(caller.id), "name": "renamed"}
        response = await client.put(f"{prefix}/{conv}", json=body, headers=caller.headers)
        if status != 200:
            assert_error(response, status)
            await assert_untouched(world)
            return
        assert response.status_code == 200, response.text
        got = response.json()
        assert (got["id"], got["owner_type"], got["owner_id"], got["name"]) == (
            conv,
            "agent",
            str(caller.id),
            "renamed",
        )
        row = await db_row(conv)
        assert (row["owner_type"], row["owner_id"], row["name"]) == ("agent", caller.id, "renamed")
        assert await updated_events(conv) == [("agent", str(world.home.agent.id)), ("agent", str(caller.id))]

    elif op in ("unassign", "service_unassign"):
        prefix = "/v1.0/conversations" if op == "unassign" else "/v1.0/service_agents/conversations"
        response = await client.post(f"{prefix}/{conv}/unassign", headers=caller.headers)
        if status != 200:
            assert_error(response, status)
            await assert_untouched(world)
            return
        assert response.status_code == 200, response.text
        got = response.json()
        assert (got["id"], got["owner_type"], got["owner_id"]) == (conv, "", NIL)
        row = await db_row(conv)
        assert (row["owner_type"], str(row["owner_id"])) == ("", NIL)
        assert await updated_events(conv) == [("agent", str(world.home.agent.id)), ("", NIL)]

    elif op.startswith("participants_"):
        await participants_cell(client, world, op, caller, status)

    else:
        params = {
            "list_own_id": {"owner_id": str(caller.id)},
            "list_other_id": {"owner_id": str(world.another_agent_of(caller_name).id)},
            "list_omitted": {},
            "list_nil": {"owner_id": NIL},
        }[op]
        response = await client.get("/v1.0/conversations", params=params, headers=caller.headers)
        if status != 200:
            assert_error(response, status)
            return
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_page_token"] == ""
        ids = {c["id"] for c in page["result"]}
        expected = _expected_listing(world, op, caller_name)
        assert ids == expected
        if caller_name == "foreign_admin":
            home = {world.assigned, world.unassigned}
            assert not ids & home
            assert {c["customer_id"] for c in page["result"]} <= {str(world.foreign.customer_id)}
        # Listing never changes anything.
        await assert_untouched(world)


async def live_participants(conversation_id: str) -> list[dict]:
    return await participants.participants_of(uuid.UUID(conversation_id))


async def participants_cell(client, world: World, op: str, caller: Member, status: int) -> None:
    conv, home = world.assigned, world.home
    base = f"/v1.0/conversations/{conv}/participants"
    owner = [("agent", str(home.agent.id))]
    if op == "participants_list":
        response = await client.get(base, headers=caller.headers)
        if status != 200:
            assert_error(response, status)
            return
        assert response.status_code == 200, response.text
        assert [p["id"] for p in response.json()["result"]] == [
            str(p["id"]) for p in await live_participants(conv)
        ]
        return
    if op == "participants_add":
        body = {"account_id": str(home.account["id"]), "address": {"type": "tel", "target": "+14155550042"}}
        response = await client.post(base, json=body, headers=caller.headers)
        if status != 200:
            assert_error(response, status)
            await assert_untouched(world)
            assert len(await live_participants(conv)) == 1
            return
        assert response.status_code == 200, response.text
        assert response.json()["address"]["target"] == "+14155550042"
        assert [p["target"] for p in await live_participants(conv)][1:] == ["+14155550042"]
        assert await updated_events(conv) == owner * 2
        return
    # participants_remove: a second participant, added by the admin, is removed by the caller.
    second = await participants.add_participant(
        home.customer_id,
        uuid.UUID(conv),
        home.admin.id,
        ADMIN,
        home.account["id"],
        Address(type="tel", target="+14155550043"),
    )
    response = await client.delete(f"{base}/{second['id']}", headers=caller.headers)
    if status != 200:
        assert_error(response, status)
        assert second["id"] in [p["id"] for p in await live_participants(conv)]
        assert await updated_events(conv) == owner * 2
        return
    assert response.status_code == 200, response.text
    assert response.json()["id"] == str(second["id"]) and response.json()["tm_delete"]
    assert len(await live_participants(conv)) == 1
    assert await updated_events(conv) == owner * 3


def _expected_listing(world: World, op: str, caller_name: str) -> set[str]:
    if caller_name == "foreign_admin":
        # The filter ids (own admin, the home owner) own nothing in the foreign customer.
        return {world.foreign_conversation} if op in ("list_omitted", "list_nil") else set()
    if op in ("list_omitted", "list_nil"):
        return {world.assigned, world.unassigned}
    if op == "list_own_id":
        return {world.assigned} if caller_name == "owner" else set()
    # list_other_id: admin/manager filter by the owner's id.
    return {world.assigned}
