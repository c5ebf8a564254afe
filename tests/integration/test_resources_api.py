"""Login, agents, contacts and accounts through the HTTP API, and the OpenAPI document."""

from __future__ import annotations

import secrets
import uuid

import jwt
from litestar.routes import HTTPRoute

from api.app import create_app
from hub.addresses import Address
from hub.inbound import InboundMessage, store_inbound
from hub.permissions import ADMIN, MANAGER, NIL_UUID
from hub.tables import Account, Agent, Contact
from tests.helpers import JWT_SECRET, make_tenant

PASSWORD = "password-123"  # what tests.helpers.make_member gives every agent
NIL = str(NIL_UUID)


def new_username(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def assert_error(response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["status"], error["reason"]) == (status, reason)
    assert error["message"] and error["request_id"]


# ------------------------------------------------------------------------------------------- login


async def test_login_gives_a_token_usable_as_bearer_and_query(client, settings):
    tenant = await make_tenant()
    response = await client.post(
        "/auth/login", json={"username": tenant.agent.username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"token"}
    token = response.json()["token"]

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(tenant.agent.id)
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600 == settings.jwt_ttl_seconds

    by_header = await client.get(
        f"/v1.0/agents/{tenant.agent.id}", headers={"Authorization": f"Bearer {token}"}
    )
    by_query = await client.get(f"/v1.0/agents/{tenant.agent.id}", params={"token": token})
    assert by_header.status_code == by_query.status_code == 200
    assert by_header.json()["username"] == by_query.json()["username"] == tenant.agent.username


async def test_login_failures_are_401_and_alike(client):
    tenant = await make_tenant()
    wrong = await client.post(
        "/auth/login", json={"username": tenant.agent.username, "password": "wrong-password"}
    )
    unknown = await client.post("/auth/login", json={"username": new_username("ghost"), "password": PASSWORD})
    assert_error(wrong, 401, "unauthorized")
    assert_error(unknown, 401, "unauthorized")
    # The answer does not tell which usernames exist.
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    assert "token" not in wrong.text
    # Usernames are case-sensitive identifiers, passwords too.
    upper = await client.post(
        "/auth/login", json={"username": tenant.agent.username, "password": PASSWORD.upper()}
    )
    assert_error(upper, 401, "unauthorized")


# ------------------------------------------------------------------------------------------ agents


def assert_no_password(response, *passwords: str) -> None:
    text = response.text
    for password in (PASSWORD, *passwords):
        assert password not in text
    assert "password" not in text and "argon2" not in text


async def test_admin_and_manager_create_update_delete_agents(client):
    tenant = await make_tenant()
    for creator in (tenant.admin, tenant.manager):
        username, password = new_username("made"), secrets.token_hex(8)
        created = await client.post(
            "/v1.0/agents",
            json={"username": username, "password": password, "name": "Made", "permission": 0},
            headers=creator.headers,
        )
        assert created.status_code == 200, created.text
        assert_no_password(created, password)
        body = created.json()
        assert (body["username"], body["name"], body["permission"]) == (username, "Made", 0)
        assert body["customer_id"] == str(tenant.customer_id) and body["tm_delete"] is None
        agent_id = body["id"]

        # The new agent can log in with the password it was given.
        login = await client.post("/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200

        # PUT is partial: the name changes, everything else stays.
        updated = await client.put(
            f"/v1.0/agents/{agent_id}",
            json={"detail": "night shift", "username": "ignored", "id": str(uuid.uuid4())},
            headers=creator.headers,
        )
        assert updated.status_code == 200, updated.text
        assert_no_password(updated, password)
        got = updated.json()
        assert (got["id"], got["username"], got["name"], got["detail"]) == (
            agent_id,
            username,
            "Made",
            "night shift",
        )

        # A password change takes effect; the old one stops working.
        new_password = secrets.token_hex(8)
        changed = await client.put(
            f"/v1.0/agents/{agent_id}", json={"password": new_password}, headers=creator.headers
        )
        assert changed.status_code == 200
        assert_no_password(changed, new_password)
        old = await client.post("/auth/login", json={"username": username, "password": password})
        assert_error(old, 401, "unauthorized")
        assert (
            await client.post("/auth/login", json={"username": username, "password": new_password})
        ).status_code == 200

        deleted = await client.delete(f"/v1.0/agents/{agent_id}", headers=creator.headers)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["tm_delete"] is not None
        assert_error(await client.get(f"/v1.0/agents/{agent_id}", headers=creator.headers), 404, "not_found")
        gone = await client.post("/auth/login", json={"username": username, "password": new_password})
        assert_error(gone, 401, "unauthorized")


async def test_plain_agent_reads_but_cannot_manage_agents(client):
    tenant = await make_tenant()
    stranger = await make_tenant()
    h = tenant.agent.headers
    before = await Agent.count().where(Agent.customer_id == tenant.customer_id)

    listed = await client.get("/v1.0/agents", headers=h)
    assert listed.status_code == 200
    assert_no_password(listed)
    ids = {a["id"] for a in listed.json()["result"]}
    assert ids == {str(m.id) for m in (tenant.admin, tenant.manager, tenant.agent, tenant.other_agent)}
    assert listed.json()["next_page_token"] == ""
    one = await client.get(f"/v1.0/agents/{tenant.other_agent.id}", headers=h)
    assert one.status_code == 200 and one.json()["username"] == tenant.other_agent.username
    assert_no_password(one)

    attempts = [
        client.post("/v1.0/agents", json={"username": new_username(), "password": PASSWORD}, headers=h),
        client.put(f"/v1.0/agents/{tenant.other_agent.id}", json={"name": "hacked"}, headers=h),
        client.put(f"/v1.0/agents/{tenant.agent.id}", json={"permission": ADMIN}, headers=h),
        client.delete(f"/v1.0/agents/{tenant.other_agent.id}", headers=h),
    ]
    for attempt in attempts:
        assert_error(await attempt, 403, "forbidden")
    assert await Agent.count().where(Agent.customer_id == tenant.customer_id) == before
    row = await Agent.select().where(Agent.id == tenant.other_agent.id).first()
    assert row["name"] == "other" and row["tm_delete"] is None
    assert (await Agent.select().where(Agent.id == tenant.agent.id).first())["permission"] == 0

    # Another customer's agents are invisible, even by id.
    assert_error(await client.get(f"/v1.0/agents/{stranger.agent.id}", headers=h), 404, "not_found")


async def test_other_customers_agent_ids_are_404_for_admins(client):
    tenant = await make_tenant()
    stranger = await make_tenant()
    h = tenant.admin.headers
    target = f"/v1.0/agents/{stranger.agent.id}"
    assert_error(await client.get(target, headers=h), 404, "not_found")
    assert_error(await client.put(target, json={"name": "hijacked"}, headers=h), 404, "not_found")
    assert_error(await client.put(target, json={"password": "new-password-1"}, headers=h), 404, "not_found")
    assert_error(await client.delete(target, headers=h), 404, "not_found")
    assert_error(await client.get(f"/v1.0/agents/{uuid.uuid4()}", headers=h), 404, "not_found")
    row = await Agent.select().where(Agent.id == stranger.agent.id).first()
    assert row["name"] == "agent" and row["tm_delete"] is None
    listed = (await client.get("/v1.0/agents", headers=h)).json()["result"]
    assert str(stranger.agent.id) not in {a["id"] for a in listed}


async def test_duplicate_username_is_409_even_across_customers(client):
    tenant = await make_tenant()
    stranger = await make_tenant()
    count = await Agent.count()
    for username in (tenant.agent.username, stranger.agent.username):
        response = await client.post(
            "/v1.0/agents", json={"username": username, "password": PASSWORD}, headers=tenant.admin.headers
        )
        assert_error(response, 409, "conflict")
    assert await Agent.count() == count


async def test_a_manager_cannot_grant_admin(client):
    tenant = await make_tenant()
    h = tenant.manager.headers
    count = await Agent.count().where(Agent.customer_id == tenant.customer_id)
    for permission in (ADMIN, ADMIN | MANAGER):
        response = await client.post(
            "/v1.0/agents",
            json={"username": new_username(), "password": PASSWORD, "permission": permission},
            headers=h,
        )
        assert_error(response, 403, "forbidden")
        response = await client.put(
            f"/v1.0/agents/{tenant.agent.id}", json={"permission": permission}, headers=h
        )
        assert_error(response, 403, "forbidden")
    assert await Agent.count().where(Agent.customer_id == tenant.customer_id) == count
    assert (await Agent.select().where(Agent.id == tenant.agent.id).first())["permission"] == 0

    # Granting what the manager holds itself is fine; an admin may grant admin.
    promoted = await client.put(f"/v1.0/agents/{tenant.agent.id}", json={"permission": MANAGER}, headers=h)
    assert promoted.status_code == 200 and promoted.json()["permission"] == MANAGER
    made_admin = await client.put(
        f"/v1.0/agents/{tenant.other_agent.id}", json={"permission": ADMIN}, headers=tenant.admin.headers
    )
    assert made_admin.status_code == 200 and made_admin.json()["permission"] == ADMIN


async def test_a_manager_cannot_take_over_or_remove_an_admin(client):
    tenant = await make_tenant()
    h = tenant.manager.headers
    admin = f"/v1.0/agents/{tenant.admin.id}"
    for body in ({"password": "taken-over-123"}, {"permission": 0}, {"name": "demoted"}):
        assert_error(await client.put(admin, json=body, headers=h), 403, "forbidden")
    assert_error(await client.delete(admin, headers=h), 403, "forbidden")
    login = await client.post(
        "/auth/login", json={"username": tenant.admin.username, "password": "taken-over-123"}
    )
    assert_error(login, 401, "unauthorized")
    row = await Agent.select().where(Agent.id == tenant.admin.id).first()
    assert (row["permission"], row["name"], row["tm_delete"]) == (ADMIN, "admin", None)
    # An admin still manages other admins.
    other_admin = await client.post(
        "/v1.0/agents",
        json={"username": new_username("admin2"), "password": PASSWORD, "permission": ADMIN},
        headers=tenant.admin.headers,
    )
    assert other_admin.status_code == 200
    renamed = await client.put(
        f"/v1.0/agents/{other_admin.json()['id']}", json={"name": "Second"}, headers=tenant.admin.headers
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Second"


async def test_agents_cannot_delete_themselves_or_change_their_own_permission(client):
    tenant = await make_tenant()
    me = f"/v1.0/agents/{tenant.admin.id}"
    assert_error(await client.delete(me, headers=tenant.admin.headers), 400, "bad_request")
    assert_error(
        await client.put(me, json={"permission": 0}, headers=tenant.admin.headers), 400, "bad_request"
    )
    renamed = await client.put(me, json={"name": "Boss"}, headers=tenant.admin.headers)
    assert renamed.status_code == 200 and renamed.json()["permission"] == ADMIN


async def test_deleted_agent_loses_its_token_and_its_conversations(client):
    tenant = await make_tenant()
    result = await store_inbound(
        InboundMessage(
            account=tenant.account,
            peer=Address(type="tel", target="+14155550142"),
            self_address=Address(type="tel", target=tenant.account["number"]),
            provider_message_id="SM" + uuid.uuid4().hex,
            text="hi",
        )
    )
    conversation = f"/v1.0/conversations/{result.conversation['id']}"
    assigned = await client.put(
        conversation, json={"owner_id": str(tenant.agent.id)}, headers=tenant.admin.headers
    )
    assert assigned.status_code == 200
    assert (assigned.json()["owner_type"], assigned.json()["owner_id"]) == ("agent", str(tenant.agent.id))
    assert (await client.get("/v1.0/agents", headers=tenant.agent.headers)).status_code == 200

    deleted = await client.delete(f"/v1.0/agents/{tenant.agent.id}", headers=tenant.manager.headers)
    assert deleted.status_code == 200, deleted.text

    for request in (
        client.get("/v1.0/agents", headers=tenant.agent.headers),
        client.get("/v1.0/agents", params={"token": tenant.agent.token}),
        client.get(conversation, headers=tenant.agent.headers),
    ):
        assert_error(await request, 401, "unauthorized")
    after = (await client.get(conversation, headers=tenant.admin.headers)).json()
    assert (after["owner_type"], after["owner_id"]) == ("", NIL)
    listed = (await client.get("/v1.0/agents", headers=tenant.admin.headers)).json()["result"]
    assert str(tenant.agent.id) not in {a["id"] for a in listed}
    # Deleting twice is a 404, not a second success.
    again = await client.delete(f"/v1.0/agents/{tenant.agent.id}", headers=tenant.manager.headers)
    assert_error(again, 404, "not_found")


async def test_agent_list_pages(client):
    tenant = await make_tenant()
    seen, token = [], ""
    while True:
        params = {"page_size": 3, **({"page_token": token} if token else {})}
        page = (await client.get("/v1.0/agents", params=params, headers=tenant.admin.headers)).json()
        seen.extend(a["id"] for a in page["result"])
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 4
    assert set(seen) == {str(m.id) for m in (tenant.admin, tenant.manager, tenant.agent, tenant.other_agent)}


# ---------------------------------------------------------------------------------------- contacts


async def test_contacts_crud_with_normalised_addresses(client):
    tenant = await make_tenant()
    h = tenant.agent.headers  # any agent of the customer manages contacts
    created = await client.post(
        "/v1.0/contacts",
        json={
            "name": "Alice",
            "detail": "VIP",
            "addresses": [
                {"type": "tel", "target": "+1 (415) 555-1234"},
                {"type": "email", "target": " Alice@Example.COM "},
                {"type": "line", "target": "U0123456789abcdefABCDEF0123456789"},
                {"type": "tel", "target": "415.555.9876"},
            ],
        },
        headers=h,
    )
    assert created.status_code == 200, created.text
    contact = created.json()
    assert (contact["name"], contact["detail"], contact["customer_id"]) == (
        "Alice",
        "VIP",
        str(tenant.customer_id),
    )
    assert contact["addresses"] == [
        {"type": "tel", "target": "+14155551234"},
        {"type": "email", "target": "alice@example.com"},
        {"type": "line", "target": "U0123456789abcdefABCDEF0123456789"},
        {"type": "tel", "target": "+14155559876"},
    ]
    path = f"/v1.0/contacts/{contact['id']}"
    assert (await client.get(path, headers=h)).json() == contact
    listed = (await client.get("/v1.0/contacts", headers=h)).json()
    assert [c["id"] for c in listed["result"]] == [contact["id"]]

    # Partial update: the name changes, the addresses stay.
    renamed = (await client.put(path, json={"name": "Alice B."}, headers=h)).json()
    assert renamed["name"] == "Alice B." and renamed["detail"] == "VIP"
    assert renamed["addresses"] == contact["addresses"]
    # Addresses given are the new list, normalised too.
    readdressed = (
        await client.put(
            path, json={"addresses": [{"type": "tel", "target": "0044 20 7946 0958"}]}, headers=h
        )
    ).json()
    assert readdressed["addresses"] == [{"type": "tel", "target": "+442079460958"}]
    assert readdressed["name"] == "Alice B."
    assert (await client.get(path, headers=h)).json()["addresses"] == readdressed["addresses"]

    # Invalid addresses are refused and change nothing.
    bad = await client.put(path, json={"addresses": [{"type": "tel", "target": "not a phone"}]}, headers=h)
    assert_error(bad, 400, "bad_request")
    assert (await client.get(path, headers=h)).json()["addresses"] == readdressed["addresses"]

    deleted = await client.delete(path, headers=h)
    assert deleted.status_code == 200 and deleted.json()["tm_delete"] is not None
    assert_error(await client.get(path, headers=h), 404, "not_found")
    assert (await client.get("/v1.0/contacts", headers=h)).json()["result"] == []


async def test_contacts_of_other_customers_are_404(client):
    tenant = await make_tenant()
    stranger = await make_tenant()
    created = await client.post(
        "/v1.0/contacts",
        json={"name": "Secret", "addresses": [{"type": "tel", "target": "+14155550001"}]},
        headers=stranger.admin.headers,
    )
    path = f"/v1.0/contacts/{created.json()['id']}"
    h = tenant.admin.headers
    assert_error(await client.get(path, headers=h), 404, "not_found")
    assert_error(await client.put(path, json={"name": "Mine"}, headers=h), 404, "not_found")
    assert_error(await client.delete(path, headers=h), 404, "not_found")
    assert (await client.get("/v1.0/contacts", headers=h)).json()["result"] == []
    row = await Contact.select().where(Contact.id == created.json()["id"]).first()
    assert row["name"] == "Secret" and row["tm_delete"] is None


# ---------------------------------------------------------------------------------------- accounts


async def test_account_secrets_are_write_only(client):
    tenant = await make_tenant()
    h = tenant.admin.headers
    secret, token = "sec-" + secrets.token_hex(16), "tok-" + secrets.token_hex(16)
    created = await client.post(
        "/v1.0/accounts",
        json={
            "type": "sms",
            "name": "Support",
            "number": "+1 (555) 000-3000",
            "sid": "AC" + "1" * 32,
            "secret": secret,
            "token": token,
        },
        headers=h,
    )
    assert created.status_code == 200, created.text
    account = created.json()
    assert account["number"] == "+15550003000"  # normalised to E.164
    assert (account["type"], account["name"], account["sid"]) == ("sms", "Support", "AC" + "1" * 32)
    assert account["message_flow_id"] is None
    path = f"/v1.0/accounts/{account['id']}"

    new_secret, new_token = "sec2-" + secrets.token_hex(16), "tok2-" + secrets.token_hex(16)
    responses = [
        created,
        await client.get(path, headers=h),
        await client.get("/v1.0/accounts", headers=h),
        await client.put(
            path, json={"secret": new_secret, "token": new_token, "name": "Support 2"}, headers=h
        ),
        await client.get(path, headers=h),
        await client.get("/v1.0/accounts", params={"token": tenant.manager.token}),
        await client.put(path, json={"number": "nope", "token": "tok3-leak-check"}, headers=h),
        await client.delete(path, headers=h),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 200, 400, 200]
    for response in responses:
        for value in (secret, token, new_secret, new_token, "tok3-leak-check"):
            assert value not in response.text, response.request.url
        for body in [response.json()] + response.json().get("result", []):
            assert "secret" not in body and "token" not in body
    assert responses[3].json()["name"] == "Support 2"

    # They were stored all the same: write-only, not ignored.
    row = await Account.select().where(Account.id == account["id"]).first()
    assert (row["secret"], row["token"]) == (new_secret, new_token)


async def test_accounts_are_for_admin_and_manager_only(client):
    tenant = await make_tenant()
    path = f"/v1.0/accounts/{tenant.account['id']}"
    for member in (tenant.agent, tenant.other_agent):
        h = member.headers
        for request in (
            client.get("/v1.0/accounts", headers=h),
            client.get(path, headers=h),
            client.post("/v1.0/accounts", json={"type": "line", "name": "x"}, headers=h),
            client.put(path, json={"name": "x"}, headers=h),
            client.delete(path, headers=h),
        ):
            assert_error(await request, 403, "forbidden")
    assert await Account.count().where(Account.customer_id == tenant.customer_id) == 1
    assert (await Account.select().where(Account.id == tenant.account["id"]).first())["tm_delete"] is None

    h = tenant.manager.headers
    created = await client.post(
        "/v1.0/accounts", json={"type": "line", "name": "LINE", "token": "t"}, headers=h
    )
    assert created.status_code == 200, created.text
    assert created.json()["type"] == "line" and created.json()["number"] == ""
    listed = (await client.get("/v1.0/accounts", headers=h)).json()["result"]
    assert {a["id"] for a in listed} == {str(tenant.account["id"]), created.json()["id"]}
    unknown_flow = await client.put(
        f"/v1.0/accounts/{created.json()['id']}", json={"message_flow_id": str(uuid.uuid4())}, headers=h
    )
    assert_error(unknown_flow, 400, "bad_request")
    flow = await client.post(
        "/v1.0/flows",
        json={"name": "Greeter", "actions": [{"id": "end", "type": "stop", "option": {}}]},
        headers=h,
    )
    assert flow.status_code == 200, flow.text
    flow_id = flow.json()["id"]
    updated = await client.put(
        f"/v1.0/accounts/{created.json()['id']}",
        json={"message_flow_id": flow_id, "type": "sms"},  # type is fixed at creation
        headers=h,
    )
    assert updated.status_code == 200
    assert (updated.json()["message_flow_id"], updated.json()["type"], updated.json()["name"]) == (
        flow_id,
        "line",
        "LINE",
    )
    cleared = await client.put(
        f"/v1.0/accounts/{created.json()['id']}", json={"message_flow_id": None}, headers=h
    )
    assert cleared.json()["message_flow_id"] is None
    deleted = await client.delete(f"/v1.0/accounts/{created.json()['id']}", headers=h)
    assert deleted.status_code == 200 and deleted.json()["tm_delete"] is not None
    assert_error(await client.get(f"/v1.0/accounts/{created.json()['id']}", headers=h), 404, "not_found")


async def test_sms_accounts_need_an_e164_number(client):
    tenant = await make_tenant()
    h = tenant.admin.headers
    count = await Account.count().where(Account.customer_id == tenant.customer_id)
    for number in ("", "nope", "12345", "+0123456789", "+1 555 CALL NOW", "+1234567890123456"):
        response = await client.post("/v1.0/accounts", json={"type": "sms", "number": number}, headers=h)
        assert_error(response, 400, "bad_request")
    assert await Account.count().where(Account.customer_id == tenant.customer_id) == count

    path = f"/v1.0/accounts/{tenant.account['id']}"
    assert_error(await client.put(path, json={"number": "nope"}, headers=h), 400, "bad_request")
    assert (await client.get(path, headers=h)).json()["number"] == tenant.account["number"]
    moved = await client.put(path, json={"number": "(555) 000-4444"}, headers=h)
    assert moved.status_code == 200 and moved.json()["number"] == "+15550004444"


async def test_other_customers_accounts_are_404(client):
    tenant = await make_tenant()
    stranger = await make_tenant()
    path = f"/v1.0/accounts/{stranger.account['id']}"
    h = tenant.admin.headers
    assert_error(await client.get(path, headers=h), 404, "not_found")
    assert_error(await client.put(path, json={"token": "mine now"}, headers=h), 404, "not_found")
    assert_error(await client.delete(path, headers=h), 404, "not_found")
    listed = (await client.get("/v1.0/accounts", headers=h)).json()["result"]
    assert [a["id"] for a in listed] == [str(tenant.account["id"])]
    row = await Account.select().where(Account.id == stranger.account["id"]).first()
    assert row["token"] == stranger.auth_token and row["tm_delete"] is None


# ----------------------------------------------------------------------------------------- OpenAPI


def served_v1_operations(settings) -> set[tuple[str, str]]:
    found = set()
    for route in create_app(settings).routes:
        if isinstance(route, HTTPRoute) and route.path_format.startswith("/v1.0/"):
            for handler in route.route_handlers:
                if handler.include_in_schema is False:
                    continue
                for method in handler.http_methods - {"OPTIONS", "HEAD"}:
                    found.add((method.lower(), route.path_format))
    return found


async def test_openapi_document_lists_every_served_path(client, settings):
    response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")

    documented = {
        (method, path)
        for path, item in document["paths"].items()
        if path.startswith("/v1.0/")
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }
    served = served_v1_operations(settings)
    assert served == documented
    for expected in (
        ("get", "/v1.0/agents"),
        ("post", "/v1.0/agents"),
        ("put", "/v1.0/agents/{agent_id}"),
        ("delete", "/v1.0/contacts/{contact_id}"),
        ("post", "/v1.0/accounts"),
        ("get", "/v1.0/conversations"),
        ("put", "/v1.0/conversations/{conversation_id}"),
        ("post", "/v1.0/conversations/{conversation_id}/unassign"),
        ("put", "/v1.0/service_agents/conversations/{conversation_id}"),
        ("post", "/v1.0/service_agents/conversations/{conversation_id}/unassign"),
        ("get", "/v1.0/conversation_messages/{message_id}"),
    ):
        assert expected in documented
    assert "post" in document["paths"]["/auth/login"]
    # Ids in paths are documented as UUIDs.
    params = document["paths"]["/v1.0/agents/{agent_id}"]["get"]["parameters"]
    [agent_id] = [p for p in params if p["name"] == "agent_id"]
    assert agent_id["in"] == "path" and agent_id["schema"].get("format") == "uuid"


async def test_openapi_schemas_match_the_wire_format(client):
    document = (await client.get("/schema/openapi.json")).json()
    schemas = document["components"]["schemas"]
    conversation = schemas["ConversationOut"]["properties"]
    assert "self" in conversation and "peer" in conversation
    assert "self_" not in conversation
    for field in ("id", "customer_id", "account_id", "type", "name", "detail", "owner_type", "owner_id"):
        assert field in conversation
    # Write-only credentials are accepted on write and never documented in answers.
    assert {"secret", "token"} <= set(schemas["AccountCreate"]["properties"])
    assert not {"secret", "token"} & set(schemas["AccountOut"]["properties"])
    assert "password" in schemas["AgentCreate"]["properties"]
    assert not {"password", "password_hash"} & set(schemas["AgentOut"]["properties"])
    # The documented answer of GET /v1.0/conversations/{id} is that schema.
    get_one = document["paths"]["/v1.0/conversations/{conversation_id}"]["get"]
    ref = get_one["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.endswith("/ConversationOut")
    # And a real answer carries exactly the documented properties.
    tenant = await make_tenant()
    result = await store_inbound(
        InboundMessage(
            account=tenant.account,
            peer=Address(type="tel", target="+14155550177"),
            self_address=Address(type="tel", target=tenant.account["number"]),
            provider_message_id="SM" + uuid.uuid4().hex,
        )
    )
    body = (
        await client.get(f"/v1.0/conversations/{result.conversation['id']}", headers=tenant.admin.headers)
    ).json()
    assert set(body) == set(conversation)
    assert set(body["self"]) == set(schemas["Address"]["properties"]) == set(body["peer"])


async def test_contact_list_keeps_each_contacts_addresses_in_order(client):
    tenant = await make_tenant()
    h = tenant.admin.headers
    made = {}
    for i in range(3):
        body = {
            "name": f"c{i}",
            "addresses": [
                {"type": "tel", "target": f"+1415555{i:04d}"},
                {"type": "email", "target": f"C{i}@Example.com"},
            ],
        }
        made[f"c{i}"] = (await client.post("/v1.0/contacts", json=body, headers=h)).json()["addresses"]
    listed = (await client.get("/v1.0/contacts", headers=h)).json()["result"]
    assert {c["name"]: c["addresses"] for c in listed} == made
    assert made["c1"] == [
        {"type": "tel", "target": "+14155550001"},
        {"type": "email", "target": "c1@example.com"},
    ]
