"""Conversation API: owner derivation, owner validation, events, listing, isolation, deletion."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import msgspec
import pytest

from hub import agents
from hub.tables import Conversation, Event, Message
from tests.helpers import Tenant, make_tenant, open_conversation

NIL = str(uuid.UUID(int=0))


async def new_conversation(client, tenant: Tenant) -> dict:
    """A conversation made by a signed inbound SMS from a new peer, as the API shows it."""
    conversation_id = await open_conversation(client, tenant)
    response = await client.get(f"/v1.0/conversations/{conversation_id}", headers=tenant.admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def put(client, member, conversation_id, body, prefix="/v1.0/conversations"):
    return await client.put(f"{prefix}/{conversation_id}", json=body, headers=member.headers)


async def assign(client, tenant: Tenant, conversation_id, owner_id) -> dict:
    response = await put(client, tenant.admin, conversation_id, {"owner_id": str(owner_id)})
    assert response.status_code == 200, response.text
    return response.json()


async def listing(client, member, **params) -> list[str]:
    response = await client.get("/v1.0/conversations", params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    assert response.json()["next_page_token"] == ""
    return [c["id"] for c in response.json()["result"]]


async def events_of(conversation_id, event_type: str) -> list[dict]:
    rows = (
        await Event.select(Event.data)
        .where(Event.conversation_id == uuid.UUID(str(conversation_id)), Event.type == event_type)
        .order_by(Event.seq)
    )
    return [msgspec.json.decode(r["data"]) for r in rows]


def assert_error(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["status"], error["reason"]) == (status, reason)
    assert error["message"] and error["request_id"]
    return error


# --- owner_type derivation and partial update -------------------------------------------------


async def test_owner_type_is_derived_from_owner_id(client):
    tenant = await make_tenant()
    conv = await new_conversation(client, tenant)
    cid = conv["id"]
    assert (conv["owner_type"], conv["owner_id"]) == ("", NIL)

    got = await assign(client, tenant, cid, tenant.agent.id)
    assert (got["owner_type"], got["owner_id"]) == ("agent", str(tenant.agent.id))
    stored = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert (stored["owner_type"], stored["owner_id"]) == ("agent", str(tenant.agent.id))

    response = await put(client, tenant.manager, cid, {"owner_id": NIL})
    assert response.status_code == 200, response.text
    assert (response.json()["owner_type"], response.json()["owner_id"]) == ("", NIL)
    stored = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert (stored["owner_type"], stored["owner_id"]) == ("", NIL)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"owner_id": NIL, "owner_type": "agent"}, ("", NIL), id="agent-type-with-nil-owner"),
        pytest.param({"owner_id": "AGENT", "owner_type": "bogus"}, ("agent", "AGENT"), id="bogus-type"),
        pytest.param({"owner_id": "AGENT", "owner_type": ""}, ("agent", "AGENT"), id="empty-type-with-agent"),
        pytest.param({"owner_type": "agent"}, ("", NIL), id="type-alone-changes-nothing"),
    ],
)
async def test_client_supplied_owner_type_is_ignored(client, body, expected):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    agent_id = str(tenant.agent.id)
    body = {k: agent_id if v == "AGENT" else v for k, v in body.items()}
    response = await put(client, tenant.admin, cid, body)
    assert response.status_code == 200, response.text
    want = tuple(agent_id if v == "AGENT" else v for v in expected)
    assert (response.json()["owner_type"], response.json()["owner_id"]) == want
    row = await Conversation.select().where(Conversation.id == uuid.UUID(cid)).first()
    assert (row["owner_type"], str(row["owner_id"])) == want


async def test_partial_update_keeps_the_fields_left_out(client):
    tenant = await make_tenant()
    conv = await new_conversation(client, tenant)
    cid = conv["id"]
    await assign(client, tenant, cid, tenant.agent.id)

    response = await put(client, tenant.admin, cid, {"name": "Renamed"})
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["name"], got["detail"]) == ("Renamed", conv["detail"])
    assert (got["owner_type"], got["owner_id"]) == ("agent", str(tenant.agent.id))

    response = await put(client, tenant.manager, cid, {"detail": "VIP"})
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["name"], got["detail"]) == ("Renamed", "VIP")
    assert (got["owner_type"], got["owner_id"]) == ("agent", str(tenant.agent.id))
    for key in ("id", "customer_id", "account_id", "type", "self", "peer", "tm_create"):
        assert got[key] == conv[key], key

    # Read-only fields in the body are ignored too.
    other = await make_tenant("+15550003000")
    read_only = {"id": str(uuid.uuid4()), "customer_id": str(other.customer_id), "type": "line"}
    response = await put(client, tenant.admin, cid, {**read_only, "tm_delete": "2020-01-01T00:00:00Z"})
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["id"], got["customer_id"], got["type"], got["tm_delete"]) == (
        cid,
        str(tenant.customer_id),
        "message",
        None,
    )
    assert (got["name"], got["detail"], got["owner_id"]) == ("Renamed", "VIP", str(tenant.agent.id))

    stored = (await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)).json()
    assert (stored["name"], stored["detail"], stored["owner_type"], stored["owner_id"]) == (
        "Renamed",
        "VIP",
        "agent",
        str(tenant.agent.id),
    )


@pytest.mark.parametrize("prefix", ["/v1.0/conversations", "/v1.0/service_agents/conversations"])
async def test_unassign_returns_the_conversation_with_nil_owner(client, prefix):
    tenant = await make_tenant()
    conv = await new_conversation(client, tenant)
    await assign(client, tenant, conv["id"], tenant.agent.id)
    # The owning agent, with the token in the query string as the documentation shows it.
    response = await client.post(f"{prefix}/{conv['id']}/unassign", params={"token": tenant.agent.token})
    assert response.status_code == 200, response.text
    got = response.json()
    assert (got["id"], got["owner_type"], got["owner_id"]) == (conv["id"], "", NIL)
    assert (got["name"], got["detail"], got["peer"]) == (conv["name"], conv["detail"], conv["peer"])
    stored = (await client.get(f"/v1.0/conversations/{conv['id']}", headers=tenant.admin.headers)).json()
    assert (stored["owner_type"], stored["owner_id"]) == ("", NIL)


# --- owner validation --------------------------------------------------------------------------


async def test_unknown_and_foreign_agent_are_the_same_400(client):
    tenant = await make_tenant()
    other = await make_tenant("+15550002000")
    cid = (await new_conversation(client, tenant))["id"]
    await assign(client, tenant, cid, tenant.agent.id)

    gone = await agents.create_agent(tenant.customer_id, f"gone-{uuid.uuid4().hex[:8]}", "password-123")
    await agents.delete_agent(tenant.customer_id, gone["id"])

    errors = []
    for prefix in ("/v1.0/conversations", "/v1.0/service_agents/conversations"):
        for bad_owner in (uuid.uuid4(), other.agent.id, other.admin.id, gone["id"]):
            response = await put(client, tenant.admin, cid, {"owner_id": str(bad_owner)}, prefix=prefix)
            error = assert_error(response, 400, "bad_request")
            assert str(bad_owner) not in error["message"]
            errors.append({k: v for k, v in error.items() if k != "request_id"})
    assert all(e == errors[0] for e in errors), errors
    # The request ids differ, everything else is identical.
    assert len({e["message"] for e in errors}) == 1

    row = await Conversation.select().where(Conversation.id == uuid.UUID(cid)).first()
    assert (row["owner_type"], row["owner_id"]) == ("agent", tenant.agent.id)
    assert len(await events_of(cid, "conversation_updated")) == 1


# --- events --------------------------------------------------------------------------------------


async def test_every_assign_and_unassign_emits_conversation_updated_in_order(client):
    tenant = await make_tenant()
    cid = (await new_conversation(client, tenant))["id"]
    agent, other = str(tenant.agent.id), str(tenant.other_agent.id)
    sa = "/v1.0/service_agents/conversations"
    assert await events_of(cid, "conversation_updated") == []

    steps = [
        ("put", tenant.admin, "", {"owner_id": agent}),
        ("put", tenant.manager, "", {"owner_id": other}),  # reassign
        ("unassign", tenant.other_agent, "", None),  # the owner unassigns itself
        ("put", tenant.admin, sa, {"owner_id": agent}),
        ("unassign", tenant.manager, sa, None),
        ("put", tenant.admin, "", {"owner_id": other}),
        ("put", tenant.admin, "", {"owner_id": NIL}),
    ]
    for kind, member, prefix, body in steps:
        prefix = prefix or "/v1.0/conversations"
        if kind == "put":
            response = await put(client, member, cid, body, prefix=prefix)
        else:
            response = await client.post(f"{prefix}/{cid}/unassign", headers=member.headers)
        assert response.status_code == 200, response.text
        # Refused attempts in between emit nothing.
        assert (await put(client, tenant.agent, cid, {"owner_id": agent})).status_code == 403

    data = await events_of(cid, "conversation_updated")
    assert [(d["owner_type"], d["owner_id"]) for d in data] == [
        ("agent", agent),
        ("agent", other),
        ("", NIL),
        ("agent", agent),
        ("", NIL),
        ("agent", other),
        ("", NIL),
    ]
    assert {d["id"] for d in data} == {cid}
    assert {d["customer_id"] for d in data} == {str(tenant.customer_id)}
    types = (
        await Event.select(Event.type)
        .where(Event.customer_id == tenant.customer_id)
        .order_by(Event.seq)
        .output(as_list=True)
    )
    assert types[3:] == ["conversation_updated"] * 7


# --- listing ------------------------------------------------------------------------------------


async def test_owner_filter_filters(client):
    tenant = await make_tenant()
    mine, theirs, nobodys = [(await new_conversation(client, tenant))["id"] for _ in range(3)]
    await assign(client, tenant, mine, tenant.agent.id)
    await assign(client, tenant, theirs, tenant.other_agent.id)
    agent, other = tenant.agent, tenant.other_agent

    assert await listing(client, agent, owner_id=str(agent.id)) == [mine]
    assert await listing(client, other, owner_id=str(other.id)) == [theirs]
    assert await listing(client, tenant.admin, owner_id=str(agent.id)) == [mine]
    assert await listing(client, tenant.manager, owner_id=str(other.id)) == [theirs]
    assert await listing(client, tenant.admin, owner_id=str(tenant.admin.id)) == []
    everything = [nobodys, theirs, mine]
    assert await listing(client, tenant.admin) == everything
    assert await listing(client, tenant.manager, owner_id=NIL) == everything

    # Ownership moves, the filtered lists follow.
    await assign(client, tenant, theirs, agent.id)
    assert await listing(client, agent, owner_id=str(agent.id)) == [theirs, mine]
    assert await listing(client, other, owner_id=str(other.id)) == []
    response = await client.post(f"/v1.0/conversations/{mine}/unassign", headers=agent.headers)
    assert response.status_code == 200, response.text
    assert await listing(client, agent, owner_id=str(agent.id)) == [theirs]


async def _page(client, member, **params) -> dict:
    response = await client.get("/v1.0/conversations", params=params, headers=member.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_pagination_walks_everything_newest_first_with_a_stable_token(client):
    tenant = await make_tenant()
    created = [(await new_conversation(client, tenant))["id"] for _ in range(5)]
    newest_first = created[::-1]

    seen, token, pages = [], "", 0
    while True:
        params = {"page_size": 2, **({"page_token": token} if token else {})}
        page = await _page(client, tenant.admin, **params)
        pages += 1
        assert len(page["result"]) == (2 if page["next_page_token"] else 1)
        seen += [c["id"] for c in page["result"]]
        stamps = [datetime.fromisoformat(c["tm_create"]) for c in page["result"]]
        assert stamps == sorted(stamps, reverse=True)
        token = page["next_page_token"]
        if not token:
            break
        assert pages < 10
    assert pages == 3
    assert seen == newest_first
    assert len(set(seen)) == 5

    # A conversation arriving between page fetches shifts nothing: the token marks a position.
    first = await _page(client, tenant.admin, page_size=2)
    assert [c["id"] for c in first["result"]] == newest_first[:2]
    newcomer = (await new_conversation(client, tenant))["id"]
    second = await _page(client, tenant.admin, page_size=2, page_token=first["next_page_token"])
    assert [c["id"] for c in second["result"]] == newest_first[2:4]
    third = await _page(client, tenant.admin, page_size=2, page_token=second["next_page_token"])
    assert [c["id"] for c in third["result"]] == newest_first[4:]
    assert third["next_page_token"] == ""
    restart = await _page(client, tenant.admin, page_size=2)
    assert [c["id"] for c in restart["result"]] == [newcomer, newest_first[0]]

    # The owner filter pages the same way.
    for cid in created[:3]:
        await assign(client, tenant, cid, tenant.agent.id)
    mine = await _page(client, tenant.agent, page_size=2, owner_id=str(tenant.agent.id))
    assert [c["id"] for c in mine["result"]] == [created[2], created[1]]
    rest = await _page(
        client, tenant.agent, page_size=2, owner_id=str(tenant.agent.id), page_token=mine["next_page_token"]
    )
    assert [c["id"] for c in rest["result"]] == [created[0]]
    assert rest["next_page_token"] == ""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"page_size": "0"}, id="page_size-0"),
        pytest.param({"page_size": "101"}, id="page_size-101"),
        pytest.param({"page_size": "-1"}, id="page_size-negative"),
        pytest.param({"page_size": "abc"}, id="page_size-abc"),
        pytest.param({"page_token": "garbage"}, id="token-garbage"),
        pytest.param({"page_token": "%%%not-base64%%%"}, id="token-not-base64"),
        pytest.param({"page_token": "x" * 600}, id="token-too-long"),
        pytest.param({"page_token": _b64(b"{}")}, id="token-json-object"),
        pytest.param({"page_token": _b64(b'["yesterday", "nope"]')}, id="token-bad-values"),
        pytest.param({"page_token": _b64(b'["2024-01-01T00:00:00+00:00", 5]')}, id="token-int-id"),
        pytest.param(
            {"page_token": _b64(b'[5, "00000000-0000-0000-0000-000000000000"]')}, id="token-int-time"
        ),
        pytest.param({"owner_id": "not-a-uuid"}, id="owner_id-not-uuid"),
    ],
)
async def test_bad_list_parameters_are_400(client, params):
    tenant = await make_tenant()
    await new_conversation(client, tenant)
    response = await client.get("/v1.0/conversations", params=params, headers=tenant.admin.headers)
    assert_error(response, 400, "bad_request")


# --- tenant isolation and bad input -------------------------------------------------------------


async def test_another_customers_conversation_is_404_everywhere(client):
    home = await make_tenant()
    foreign = await make_tenant("+15550002000")
    conv = await new_conversation(client, home)
    cid = conv["id"]
    await assign(client, home, cid, home.agent.id)
    [message] = await Message.select(Message.id).where(Message.conversation_id == uuid.UUID(cid))
    sa = "/v1.0/service_agents/conversations"

    attempts = [
        ("GET", f"/v1.0/conversations/{cid}", None),
        ("GET", f"/v1.0/conversations/{cid}/messages", None),
        ("POST", f"/v1.0/conversations/{cid}/messages", {"text": "hijacked"}),
        ("GET", f"/v1.0/conversation_messages/{message['id']}", None),
        ("PUT", f"/v1.0/conversations/{cid}", {"name": "hijacked"}),
        ("PUT", f"/v1.0/conversations/{cid}", {"owner_id": str(foreign.agent.id)}),
        ("PUT", f"/v1.0/conversations/{cid}", {"owner_id": str(home.other_agent.id)}),
        ("PUT", f"{sa}/{cid}", {"name": "hijacked"}),
        ("POST", f"/v1.0/conversations/{cid}/unassign", None),
        ("POST", f"{sa}/{cid}/unassign", None),
        ("DELETE", f"/v1.0/conversations/{cid}", None),
        ("GET", f"/v1.0/conversations/{cid}/participants", None),
        (
            "POST",
            f"/v1.0/conversations/{cid}/participants",
            {"account_id": str(foreign.account["id"]), "address": {"type": "tel", "target": "+14155550100"}},
        ),
        ("DELETE", f"/v1.0/conversations/{cid}/participants/{conv['participants'][0]['id']}", None),
    ]
    for member in (foreign.admin, foreign.manager):
        for method, path, body in attempts:
            response = await client.request(method, path, json=body, headers=member.headers)
            assert response.status_code == 404, (method, path, body, response.text)
            assert_error(response, 404, "not_found")
    # A random id answers exactly like the foreign one.
    response = await client.get(f"/v1.0/conversations/{uuid.uuid4()}", headers=foreign.admin.headers)
    assert_error(response, 404, "not_found")

    stored = (await client.get(f"/v1.0/conversations/{cid}", headers=home.admin.headers)).json()
    assert stored == conv | {
        "owner_type": "agent",
        "owner_id": str(home.agent.id),
        "tm_update": stored["tm_update"],
    }
    assert stored["tm_delete"] is None
    assert len(await events_of(cid, "conversation_updated")) == 1
    assert await events_of(cid, "conversation_deleted") == []
    assert await Message.count().where(Message.conversation_id == uuid.UUID(cid)) == 1


BAD_IDS = ["not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g", "0" * 33]


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_bad_uuid_in_path_is_400(client, bad_id):
    tenant = await make_tenant()
    sa = "/v1.0/service_agents/conversations"
    attempts = [
        ("GET", f"/v1.0/conversations/{bad_id}", None),
        ("GET", f"/v1.0/conversations/{bad_id}/messages", None),
        ("POST", f"/v1.0/conversations/{bad_id}/messages", {"text": "x"}),
        ("GET", f"/v1.0/conversation_messages/{bad_id}", None),
        ("PUT", f"/v1.0/conversations/{bad_id}", {"name": "x"}),
        ("PUT", f"{sa}/{bad_id}", {"name": "x"}),
        ("POST", f"/v1.0/conversations/{bad_id}/unassign", None),
        ("POST", f"{sa}/{bad_id}/unassign", None),
        ("DELETE", f"/v1.0/conversations/{bad_id}", None),
    ]
    for member in (tenant.admin, tenant.agent):
        for method, path, body in attempts:
            response = await client.request(method, path, json=body, headers=member.headers)
            assert response.status_code == 400, (method, path, response.text)
            assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"owner_id": ', id="malformed-json"),
        pytest.param(b'{"owner_id": "not-a-uuid"}', id="owner-not-uuid"),
        pytest.param(b'{"owner_id": 12}', id="owner-wrong-type"),
        pytest.param(b'{"name": 5}', id="name-wrong-type"),
        pytest.param(b'{"name": "' + b"n" * 256 + b'"}', id="name-too-long"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
async def test_bad_update_body_is_400_and_changes_nothing(client, body):
    tenant = await make_tenant()
    conv = await new_conversation(client, tenant)
    response = await client.put(
        f"/v1.0/conversations/{conv['id']}",
        content=body,
        headers={**tenant.admin.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "bad_request")
    stored = (await client.get(f"/v1.0/conversations/{conv['id']}", headers=tenant.admin.headers)).json()
    assert stored == conv
    assert await events_of(conv["id"], "conversation_updated") == []


# --- deletion -----------------------------------------------------------------------------------


async def test_delete_is_admin_or_manager_soft_delete_with_event(client):
    tenant = await make_tenant()
    by_admin, by_manager, kept = [(await new_conversation(client, tenant))["id"] for _ in range(3)]
    for cid in (by_admin, by_manager, kept):
        await assign(client, tenant, cid, tenant.agent.id)

    for member in (tenant.agent, tenant.other_agent):  # the owner included
        response = await client.delete(f"/v1.0/conversations/{by_admin}", headers=member.headers)
        assert_error(response, 403, "forbidden")
    assert await listing(client, tenant.admin) == [kept, by_manager, by_admin]
    assert await events_of(by_admin, "conversation_deleted") == []

    for cid, member in ((by_admin, tenant.admin), (by_manager, tenant.manager)):
        response = await client.delete(f"/v1.0/conversations/{cid}", headers=member.headers)
        assert response.status_code == 200, response.text
        got = response.json()
        assert got["id"] == cid
        assert got["tm_delete"] is not None
        assert datetime.fromisoformat(got["tm_delete"]).utcoffset().total_seconds() == 0
        row = await Conversation.select().where(Conversation.id == uuid.UUID(cid)).first()
        assert row is not None and row["tm_delete"] is not None  # soft: the row stays

        [event] = await events_of(cid, "conversation_deleted")
        assert (event["id"], event["tm_delete"]) == (cid, got["tm_delete"])

        # Gone from every view.
        response = await client.get(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)
        assert_error(response, 404, "not_found")
        response = await client.delete(f"/v1.0/conversations/{cid}", headers=tenant.admin.headers)
        assert_error(response, 404, "not_found")
        response = await put(client, tenant.admin, cid, {"name": "zombie"})
        assert_error(response, 404, "not_found")
        response = await client.post(f"/v1.0/conversations/{cid}/unassign", headers=tenant.agent.headers)
        assert_error(response, 404, "not_found")
        assert len(await events_of(cid, "conversation_deleted")) == 1

    assert await listing(client, tenant.admin) == [kept]
    assert await listing(client, tenant.agent, owner_id=str(tenant.agent.id)) == [kept]
    deleted = await Event.count().where(
        Event.customer_id == tenant.customer_id, Event.type == "conversation_deleted"
    )
    assert deleted == 2
