"""`GET /v1.0/conversations` filters (issue 15, item 5): status, tag, account_id, type, alone and
combined with each other and with the owner rule, tenant-isolated, each served by an index."""

from __future__ import annotations

import uuid

from hub import accounts
from tests.helpers import line_event, make_line_account, make_tenant, open_conversation, signed_line
from tests.integration.test_conversation_api import assert_error, listing, put


async def _line_conversation(client, customer_id) -> tuple[dict, str]:
    account, secret = await make_line_account(customer_id)
    user = "U" + uuid.uuid4().hex
    path, body, headers = signed_line(account["id"], secret, [line_event("message", user, "hi")])
    assert (await client.post(path, content=body, headers=headers)).status_code == 200
    return account, user


async def test_filters_alone_and_combined(client):
    tenant = await make_tenant()
    second = await accounts.create_account(
        tenant.customer_id,
        {
            "type": "sms",
            "name": "Second",
            "number": "+15550009999",
            "sid": "AC" + "1" * 32,
            "token": "t" * 32,
        },
    )
    tenant_second = type(tenant)(**{**tenant.__dict__, "account": second, "auth_token": "t" * 32})
    a = str(await open_conversation(client, tenant))
    b = str(await open_conversation(client, tenant_second))
    line_account, _ = await _line_conversation(client, tenant.customer_id)
    everything = await listing(client, tenant.admin)
    assert len(everything) == 3 and everything[1:] == [b, a]
    c = everything[0]

    assert await listing(client, tenant.admin, status="open") == [c, b, a]
    assert await listing(client, tenant.admin, status="closed") == []
    assert await listing(client, tenant.admin, account_id=str(tenant.account["id"])) == [a]
    assert await listing(client, tenant.admin, account_id=str(second["id"])) == [b]
    assert await listing(client, tenant.admin, account_id=str(line_account["id"])) == [c]
    assert await listing(client, tenant.admin, type="message") == [b, a]
    assert await listing(client, tenant.admin, type="line") == [c]

    await put(client, tenant.admin, a, {"tags": ["vip"], "owner_id": str(tenant.agent.id)})
    await put(client, tenant.admin, c, {"tags": ["vip"]})
    assert await listing(client, tenant.admin, tag="vip", type="message") == [a]
    assert await listing(client, tenant.admin, tag="vip", type="line", status="open") == [c]
    assert await listing(client, tenant.admin, tag="vip", account_id=str(second["id"])) == []
    assert await listing(client, tenant.agent, owner_id=str(tenant.agent.id), type="message", tag="vip") == [
        a
    ]
    assert await listing(client, tenant.agent, owner_id=str(tenant.agent.id), type="line") == []
    # The owner rule holds with every filter.
    for params in ({"type": "line"}, {"status": "open"}, {"account_id": str(second["id"])}):
        response = await client.get("/v1.0/conversations", params=params, headers=tenant.agent.headers)
        assert_error(response, 403, "forbidden")

    # Tenant isolation: another tenant's account id lists nothing here, and its lists miss ours.
    other = await make_tenant()
    oc = str(await open_conversation(client, other))
    assert await listing(client, tenant.admin, account_id=str(other.account["id"])) == []
    assert await listing(client, other.admin, type="message") == [oc]
    assert await listing(client, other.admin, account_id=str(tenant.account["id"])) == []


async def test_bad_filter_values_are_400(client):
    tenant = await make_tenant()
    for params in (
        {"status": "archived"},
        {"type": "fax"},
        {"account_id": "not-a-uuid"},
        {"tag": "Not valid!"},
        {"status": ""},
    ):
        response = await client.get("/v1.0/conversations", params=params, headers=tenant.admin.headers)
        assert_error(response, 400, "bad_request")


async def test_peer_filter_normalises_like_inbound_and_is_tenant_scoped(client):
    tenant = await make_tenant()
    a = str(await open_conversation(client, tenant, sender="+14155550123"))
    await open_conversation(client, tenant, sender="+14155550124")
    line_account, user = await _line_conversation(client, tenant.customer_id)
    for spelling in ("+14155550123", "+1 (415) 555-0123", "+1.415.555.0123"):
        assert await listing(client, tenant.admin, peer=spelling) == [a]
    line_only = await listing(client, tenant.admin, peer=user)
    assert len(line_only) == 1 and line_only != [a]
    assert await listing(client, tenant.admin, peer="+14155559999") == []
    assert await listing(client, tenant.admin, peer="+14155550123", type="line") == []
    assert await listing(client, tenant.admin, peer=user, account_id=str(line_account["id"])) == line_only
    other = await make_tenant()
    assert await listing(client, other.admin, peer="+14155550123") == []
    response = await client.get("/v1.0/conversations", params={"peer": "  "}, headers=tenant.admin.headers)
    assert_error(response, 400, "bad_request")
