"""Bad input at the HTTP edge: every body-taking endpoint answers 400 with the error envelope (never a
500) and writes nothing; tokens are checked on every protected route."""

from __future__ import annotations

import json
import re
import time
import uuid

import jwt
import pytest
from litestar.routes import HTTPRoute

from api.app import create_app
from hub import contacts
from hub.addresses import Address
from hub.auth import issue_token
from hub.inbound import InboundMessage, store_inbound
from hub.tables import Account, Agent, Contact, ContactAddress, Conversation
from tests.helpers import JWT_SECRET, make_tenant

LONG = "x" * 10_000
ERROR_KEYS = {"status", "reason", "message", "request_id"}


def assert_error(response, status: int, reason: str) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["status"] == status
    assert error["reason"] == reason
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["request_id"], str) and error["request_id"]
    assert response.headers.get("x-request-id") == error["request_id"]
    return error


def assert_400(response) -> dict:
    return assert_error(response, 400, "bad_request")


def raw(value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


# Bodies no endpoint may accept: broken JSON and JSON that is not an object.
GENERIC_BAD_BODIES: list[tuple[str, bytes]] = [
    ("invalid json", b'{"name": '),
    ("single quotes", b"{'name': 'x'}"),
    ("trailing garbage", b'{"name": "x"} trailing'),
    ("empty body", b""),
    ("invalid utf-8", b"\xff\xfe\xfd"),
    ("lone surrogate", b'{"name": "\\ud800"}'),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
    ("array", b"[]"),
    ("array of objects", b'[{"name": "x"}]'),
    ("string", b'"text"'),
    ("number", b"42"),
    ("null", b"null"),
    ("true", b"true"),
]


async def seed(tenant) -> dict[str, uuid.UUID]:
    """A contact, a conversation and a message of `tenant`, so path ids point at real rows."""
    contact = await contacts.create_contact(
        tenant.customer_id, "Seed", "", [{"type": "tel", "target": "+14155550100"}]
    )
    result = await store_inbound(
        InboundMessage(
            account=tenant.account,
            peer=Address(type="tel", target="+14155550100"),
            self_address=Address(type="tel", target=tenant.account["number"]),
            provider_message_id="SM" + uuid.uuid4().hex,
            text="seed",
        )
    )
    return {
        "agent_id": tenant.agent.id,
        "contact_id": contact.id,
        "account_id": tenant.account["id"],
        "conversation_id": result.conversation["id"],
        "message_id": result.message["id"],
    }


def body_routes(settings) -> list[tuple[str, str]]:
    """(method, path template) of every route whose handler reads a request body."""
    found = set()
    for route in create_app(settings).routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            if "data" in handler.parsed_fn_signature.parameters:
                for method in handler.http_methods:
                    found.add((method, route.path_format))
    return sorted(found)


def fill(template: str, ids: dict[str, uuid.UUID]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids.get(m.group(1), uuid.uuid4())), template)


async def snapshot(tenant) -> dict:
    """Everything a rejected request could have written for this customer."""
    cid = tenant.customer_id
    return {
        "agents": await Agent.select().where(Agent.customer_id == cid).order_by(Agent.id),
        "contacts": await Contact.select().where(Contact.customer_id == cid).order_by(Contact.id),
        "addresses": await ContactAddress.select()
        .where(ContactAddress.customer_id == cid)
        .order_by(ContactAddress.id),
        "accounts": await Account.select().where(Account.customer_id == cid).order_by(Account.id),
        "conversations": await Conversation.select()
        .where(Conversation.customer_id == cid)
        .order_by(Conversation.id),
    }


async def test_the_known_body_endpoints_are_all_discovered(settings):
    routes = set(body_routes(settings))
    assert {
        ("POST", "/auth/login"),
        ("POST", "/v1.0/agents"),
        ("PUT", "/v1.0/agents/{agent_id}"),
        ("POST", "/v1.0/contacts"),
        ("PUT", "/v1.0/contacts/{contact_id}"),
        ("POST", "/v1.0/accounts"),
        ("PUT", "/v1.0/accounts/{account_id}"),
        ("PUT", "/v1.0/conversations/{conversation_id}"),
        ("PUT", "/v1.0/service_agents/conversations/{conversation_id}"),
    } <= routes


async def test_malformed_json_is_400_on_every_body_endpoint(client, settings):
    tenant = await make_tenant()
    ids = await seed(tenant)
    before = await snapshot(tenant)
    headers = {**tenant.admin.headers, "Content-Type": "application/json"}
    for method, template in body_routes(settings):
        for label, body in GENERIC_BAD_BODIES:
            response = await client.request(method, fill(template, ids), content=body, headers=headers)
            assert response.status_code == 400, (method, template, label, response.text)
            assert_400(response)
    assert await snapshot(tenant) == before


# Endpoint-specific bad bodies: wrong types, unknown enum values, over-long strings, bad UUIDs,
# missing required fields, values the domain rejects.
AGENT_CREATE = {"username": "fresh-user", "password": "password-123", "name": "New"}
CONTACT = {"name": "Carol", "addresses": [{"type": "tel", "target": "+14155550123"}]}
ACCOUNT = {"type": "sms", "name": "Line 2", "number": "+15550009999", "token": "t0k3n", "secret": "s3cr3t"}

LOGIN_CASES = [
    ("missing password", {"username": "someone"}),
    ("missing username", {"password": "password-123"}),
    ("empty object", {}),
    ("number for username", {"username": 123, "password": "password-123"}),
    ("list for password", {"username": "someone", "password": ["password-123"]}),
    ("over-long username", {"username": LONG, "password": "password-123"}),
    ("empty username", {"username": "", "password": "password-123"}),
]

AGENT_CREATE_CASES = [
    ("missing username", {"password": "password-123"}),
    ("missing password", {"username": "fresh-user"}),
    ("empty object", {}),
    ("number for username", {**AGENT_CREATE, "username": 42}),
    ("number for name", {**AGENT_CREATE, "name": 5}),
    ("null name", {**AGENT_CREATE, "name": None}),
    ("string permission", {**AGENT_CREATE, "permission": "admin"}),
    ("bool permission", {**AGENT_CREATE, "permission": True}),
    ("unknown permission bit", {**AGENT_CREATE, "permission": 1}),
    ("negative permission", {**AGENT_CREATE, "permission": -1}),
    ("permission above the known bits", {**AGENT_CREATE, "permission": 0x80}),
    ("huge permission", {**AGENT_CREATE, "permission": 10**30}),
    ("over-long name", {**AGENT_CREATE, "name": LONG}),
    ("over-long username", {**AGENT_CREATE, "username": LONG}),
    ("over-long password", {**AGENT_CREATE, "password": LONG}),
    ("over-long detail", {**AGENT_CREATE, "detail": LONG}),
    ("short password", {**AGENT_CREATE, "password": "short"}),
    ("username with spaces", {**AGENT_CREATE, "username": "two words"}),
    ("NUL in name", {**AGENT_CREATE, "name": "a\u0000b"}),
]

AGENT_UPDATE_CASES = [
    ("number for name", {"name": 5}),
    ("string permission", {"permission": "admin"}),
    ("unknown permission bit", {"permission": 3}),
    ("over-long name", {"name": LONG}),
    ("over-long detail", {"detail": LONG}),
    ("short password", {"password": "short"}),
    ("null password", {"password": None}),
    ("NUL in name", {"name": "\u0000"}),
]

CONTACT_CASES = [
    ("number for name", {**CONTACT, "name": 5}),
    ("string for addresses", {**CONTACT, "addresses": "+14155550123"}),
    ("null addresses", {**CONTACT, "addresses": None}),
    ("unknown address type", {**CONTACT, "addresses": [{"type": "pigeon", "target": "coop 7"}]}),
    ("address without target", {**CONTACT, "addresses": [{"type": "tel"}]}),
    ("address without type", {**CONTACT, "addresses": [{"target": "+14155550123"}]}),
    ("number for target", {**CONTACT, "addresses": [{"type": "tel", "target": 14155550123}]}),
    ("address not an object", {**CONTACT, "addresses": ["+14155550123"]}),
    ("invalid phone number", {**CONTACT, "addresses": [{"type": "tel", "target": "call me"}]}),
    ("empty target", {**CONTACT, "addresses": [{"type": "email", "target": ""}]}),
    ("over-long name", {**CONTACT, "name": LONG}),
    ("over-long target", {**CONTACT, "addresses": [{"type": "email", "target": LONG}]}),
    (
        "too many addresses",
        {**CONTACT, "addresses": [{"type": "line", "target": f"U{i}"} for i in range(51)]},
    ),
    ("NUL in name", {**CONTACT, "name": "Car\u0000ol"}),
]

ACCOUNT_CREATE_CASES = [
    ("missing type", {k: v for k, v in ACCOUNT.items() if k != "type"}),
    ("empty object", {}),
    ("unknown type", {**ACCOUNT, "type": "fax"}),
    ("number for type", {**ACCOUNT, "type": 1}),
    ("sms without number", {k: v for k, v in ACCOUNT.items() if k != "number"}),
    ("sms number not E.164", {**ACCOUNT, "number": "nope"}),
    ("sms number with letters", {**ACCOUNT, "number": "+1 555 CALL NOW"}),
    ("over-long number", {**ACCOUNT, "number": "1" * 10_000}),
    ("over-long name", {**ACCOUNT, "name": LONG}),
    ("over-long token", {**ACCOUNT, "token": LONG}),
    ("number for secret", {**ACCOUNT, "secret": 5}),
    ("bad message_flow_id", {**ACCOUNT, "message_flow_id": "nope"}),
    ("number for message_flow_id", {**ACCOUNT, "message_flow_id": 5}),
    ("NUL in name", {**ACCOUNT, "type": "line", "number": "", "name": "a\u0000"}),
]

ACCOUNT_UPDATE_CASES = [
    ("bad message_flow_id", {"message_flow_id": "nope"}),
    ("sms number not E.164", {"number": "nope"}),
    ("empty sms number", {"number": ""}),
    ("number for name", {"name": 5}),
    ("over-long name", {"name": LONG}),
    ("over-long secret", {"secret": LONG}),
    ("list for token", {"token": ["a"]}),
]

CONVERSATION_CASES = [
    ("bad owner_id", {"owner_id": "nope"}),
    ("empty owner_id", {"owner_id": ""}),
    ("number for owner_id", {"owner_id": 5}),
    ("null owner_id", {"owner_id": None}),
    ("unknown agent as owner", {"owner_id": str(uuid.uuid4())}),
    ("number for name", {"name": 5}),
    ("over-long name", {"name": LONG}),
    ("over-long detail", {"detail": LONG}),
    ("NUL in name", {"name": "\u0000"}),
]

ENDPOINT_CASES = [
    ("POST", "/auth/login", LOGIN_CASES),
    ("POST", "/v1.0/agents", AGENT_CREATE_CASES),
    ("PUT", "/v1.0/agents/{agent_id}", AGENT_UPDATE_CASES),
    ("POST", "/v1.0/contacts", CONTACT_CASES),
    ("PUT", "/v1.0/contacts/{contact_id}", CONTACT_CASES),
    ("POST", "/v1.0/accounts", ACCOUNT_CREATE_CASES),
    ("PUT", "/v1.0/accounts/{account_id}", ACCOUNT_UPDATE_CASES),
    ("PUT", "/v1.0/conversations/{conversation_id}", CONVERSATION_CASES),
    ("PUT", "/v1.0/service_agents/conversations/{conversation_id}", CONVERSATION_CASES),
]


@pytest.mark.parametrize(
    ("method", "template", "cases"), ENDPOINT_CASES, ids=[f"{m} {t}" for m, t, _ in ENDPOINT_CASES]
)
async def test_bad_bodies_are_400_and_write_nothing(client, method, template, cases):
    tenant = await make_tenant()
    ids = await seed(tenant)
    before = await snapshot(tenant)
    path = fill(template, ids)
    for label, body in cases:
        response = await client.request(method, path, content=raw(body), headers=tenant.admin.headers)
        assert response.status_code == 400, (label, response.text)
        assert_400(response)
    assert await snapshot(tenant) == before


@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("GET", "/v1.0/agents/{id}", None),
        ("PUT", "/v1.0/agents/{id}", {"name": "x"}),
        ("DELETE", "/v1.0/agents/{id}", None),
        ("GET", "/v1.0/contacts/{id}", None),
        ("PUT", "/v1.0/contacts/{id}", {"name": "x"}),
        ("DELETE", "/v1.0/contacts/{id}", None),
        ("GET", "/v1.0/accounts/{id}", None),
        ("PUT", "/v1.0/accounts/{id}", {"name": "x"}),
        ("DELETE", "/v1.0/accounts/{id}", None),
        ("GET", "/v1.0/conversations/{id}", None),
        ("PUT", "/v1.0/conversations/{id}", {"name": "x"}),
        ("DELETE", "/v1.0/conversations/{id}", None),
        ("POST", "/v1.0/conversations/{id}/unassign", None),
        ("GET", "/v1.0/conversations/{id}/messages", None),
        ("PUT", "/v1.0/service_agents/conversations/{id}", {"name": "x"}),
        ("POST", "/v1.0/service_agents/conversations/{id}/unassign", None),
        ("GET", "/v1.0/conversation_messages/{id}", None),
    ],
)
async def test_bad_uuid_in_path_is_400(client, method, template, body):
    tenant = await make_tenant()
    for bad in ("not-a-uuid", "1234", "00000000-0000-0000-0000-00000000000g"):
        response = await client.request(
            method,
            template.format(id=bad),
            content=None if body is None else raw(body),
            headers=tenant.admin.headers,
        )
        assert_400(response)


@pytest.mark.parametrize("path", ["/v1.0/agents", "/v1.0/contacts", "/v1.0/accounts", "/v1.0/conversations"])
async def test_bad_list_parameters_are_400(client, path):
    tenant = await make_tenant()
    far_past = "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzE0OjAwIiwiMDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAwIl0"
    for query in (
        "page_size=0",
        "page_size=101",
        "page_size=abc",
        "page_size=-5",
        "page_token=garbage",
        "page_token=WyJ4Il0",  # base64 of ["x"]
        f"page_token={far_past}",  # a time that leaves the calendar in UTC
        "page_token=" + "A" * 600,
    ):
        response = await client.get(f"{path}?{query}", headers=tenant.admin.headers)
        assert response.status_code == 400, (query, response.text)
        assert_400(response)


async def test_caller_request_id_is_echoed_in_errors(client):
    tenant = await make_tenant()
    response = await client.post(
        "/v1.0/agents", content=b"{", headers={**tenant.admin.headers, "X-Request-ID": "req-abc-123"}
    )
    assert assert_400(response)["request_id"] == "req-abc-123"


async def test_valid_bodies_still_work(client):
    """The cases above are rejected for their flaw, not because the base bodies are wrong."""
    tenant = await make_tenant()
    ids = await seed(tenant)
    h = tenant.admin.headers
    agent = await client.post(
        "/v1.0/agents", json={**AGENT_CREATE, "username": f"ok-{uuid.uuid4().hex[:8]}"}, headers=h
    )
    assert agent.status_code == 200, agent.text
    assert (
        await client.put(f"/v1.0/agents/{ids['agent_id']}", json={"name": "Renamed"}, headers=h)
    ).status_code == 200
    created = await client.post("/v1.0/contacts", json=CONTACT, headers=h)
    assert created.status_code == 200, created.text
    # The created contact holds CONTACT's number now: an address belongs to one contact only.
    again = await client.put(f"/v1.0/contacts/{created.json()['id']}", json=CONTACT, headers=h)
    assert again.status_code == 200, again.text
    taken = await client.put(f"/v1.0/contacts/{ids['contact_id']}", json=CONTACT, headers=h)
    assert taken.status_code == 409, taken.text
    assert (await client.post("/v1.0/accounts", json=ACCOUNT, headers=h)).status_code == 200
    assert (
        await client.put(f"/v1.0/accounts/{ids['account_id']}", json={"name": "A"}, headers=h)
    ).status_code == 200
    for prefix in ("/v1.0/conversations", "/v1.0/service_agents/conversations"):
        response = await client.put(f"{prefix}/{ids['conversation_id']}", json={"name": "Renamed"}, headers=h)
        assert response.status_code == 200, response.text
    login = await client.post(
        "/auth/login", json={"username": tenant.agent.username, "password": "password-123"}
    )
    assert login.status_code == 200, login.text


# ------------------------------------------------------------------------------------------ tokens


def protected_routes(settings) -> list[tuple[str, str]]:
    found = set()
    for route in create_app(settings).routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/v1.0/"):
            continue
        if route.path.startswith("/v1.0/hooks/"):
            continue  # provider webhooks are authenticated by signature, not JWT
        for handler in route.route_handlers:
            if "caller" in handler.parsed_fn_signature.parameters:
                for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                    found.add((method, route.path_format))
    return sorted(found)


def bad_tokens(tenant) -> dict[str, str]:
    now = int(time.time())
    return {
        "garbage": "garbage",
        "expired": issue_token(tenant.admin.id, tenant.customer_id, JWT_SECRET, ttl_seconds=-10),
        "wrong secret": issue_token(tenant.admin.id, tenant.customer_id, "another-secret-" + "x" * 32, 3600),
        "unknown agent": issue_token(uuid.uuid4(), tenant.customer_id, JWT_SECRET, 3600),
        "sub not a uuid": jwt.encode({"sub": "nope", "exp": now + 3600}, JWT_SECRET, algorithm="HS256"),
        "no exp": jwt.encode({"sub": str(tenant.admin.id)}, JWT_SECRET, algorithm="HS256"),
        "alg none": jwt.encode({"sub": str(tenant.admin.id), "exp": now + 3600}, None, algorithm="none"),
    }


async def test_every_protected_route_needs_a_token(client, settings):
    tenant = await make_tenant()
    ids = await seed(tenant)
    routes = protected_routes(settings)
    assert ("GET", "/v1.0/agents") in routes and ("PUT", "/v1.0/conversations/{conversation_id}") in routes
    before = await snapshot(tenant)
    for method, template in routes:
        response = await client.request(
            method, fill(template, ids), json={} if method in ("POST", "PUT") else None
        )
        assert response.status_code == 401, (method, template, response.text)
        assert_error(response, 401, "unauthorized")
    assert await snapshot(tenant) == before


async def test_bad_tokens_are_401_as_header_and_query(client):
    tenant = await make_tenant()
    for label, token in bad_tokens(tenant).items():
        response = await client.get("/v1.0/agents", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (label, response.text)
        assert_error(response, 401, "unauthorized")
        response = await client.get("/v1.0/agents", params={"token": token})
        assert response.status_code == 401, (label, response.text)
        assert_error(response, 401, "unauthorized")
    for header in ("Bearer", f"Basic {tenant.admin.token}", tenant.admin.token, "Token abc"):
        response = await client.get("/v1.0/agents", headers={"Authorization": header})
        assert_error(response, 401, "unauthorized")


async def test_rejected_token_writes_nothing(client):
    tenant = await make_tenant()
    before = await snapshot(tenant)
    expired = issue_token(tenant.admin.id, tenant.customer_id, JWT_SECRET, ttl_seconds=-10)
    body = {**AGENT_CREATE, "username": f"nobody-{uuid.uuid4().hex[:8]}"}
    for kwargs in ({}, {"headers": {"Authorization": f"Bearer {expired}"}}, {"params": {"token": expired}}):
        response = await client.post("/v1.0/agents", json=body, **kwargs)
        assert_error(response, 401, "unauthorized")
        response = await client.post("/v1.0/contacts", json=CONTACT, **kwargs)
        assert_error(response, 401, "unauthorized")
        response = await client.post("/v1.0/accounts", json=ACCOUNT, **kwargs)
        assert_error(response, 401, "unauthorized")
    assert await snapshot(tenant) == before
    assert not await Agent.exists().where(Agent.username == body["username"])


async def test_query_token_works_like_the_header(client):
    tenant = await make_tenant()
    by_query = await client.get("/v1.0/agents", params={"token": tenant.agent.token})
    by_header = await client.get("/v1.0/agents", headers=tenant.agent.headers)
    assert by_query.status_code == by_header.status_code == 200
    assert by_query.json() == by_header.json()
    usernames = {a["username"] for a in by_query.json()["result"]}
    assert usernames == {
        tenant.admin.username,
        tenant.manager.username,
        tenant.agent.username,
        tenant.other_agent.username,
    }

    # It carries the caller's identity and permission, not just "some valid token".
    created = await client.post(
        "/v1.0/agents",
        params={"token": tenant.admin.token},
        json={**AGENT_CREATE, "username": f"viaquery-{uuid.uuid4().hex[:8]}"},
    )
    assert created.status_code == 200, created.text
    denied = await client.post(
        "/v1.0/agents",
        params={"token": tenant.agent.token},
        json={**AGENT_CREATE, "username": f"denied-{uuid.uuid4().hex[:8]}"},
    )
    assert_error(denied, 403, "forbidden")
