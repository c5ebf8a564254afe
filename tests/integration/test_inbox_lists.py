"""hub.inbox on PostgreSQL and SQLite: views with the API's listing rule, activity order (latest
message, else creation), keyset paging that neither skips nor repeats, the filters, row checks."""

from __future__ import annotations

import uuid

import pytest

from hub import conversations, inbox, lifecycle
from hub.addresses import Address
from hub.conversations import ListFilters
from hub.errors import Forbidden
from hub.inbound import InboundMessage, store_inbound
from hub.permissions import ADMIN, NIL_UUID
from hub.tables import Conversation
from tests.helpers import make_tenant


def sms(account: dict, sender: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(
        account=account,
        peer=Address(type="tel", target=sender),
        self_address=Address(type="tel", target=account["number"], name=account["name"]),
        provider_message_id="SM" + uuid.uuid4().hex,
        text=text,
    )


async def ids_of_pages(
    tenant, view: str, page_size: int, filters: ListFilters | None = None
) -> list[list[str]]:
    query = inbox.InboxQuery(view=view, filters=filters or ListFilters())
    pages, token = [], ""
    while True:
        rows, token = await inbox.list_page(
            tenant.customer_id, tenant.admin.id, ADMIN, query, page_size, token
        )
        pages.append([str(r["id"]) for r in rows])
        if not token:
            return pages


async def test_views_order_by_activity_and_page_without_gaps(any_engine):
    tenant = await make_tenant()
    senders = [f"+1415555{n:04d}" for n in range(7)]
    made = {}
    for sender in senders:
        made[sender] = str((await store_inbound(sms(tenant.account, sender))).conversation["id"])
    # Activity moves the first and the fourth to the top, in that order (newest last).
    await store_inbound(sms(tenant.account, senders[3], "again"))
    await store_inbound(sms(tenant.account, senders[0], "and again"))
    expected = [
        made[s] for s in (senders[0], senders[3], senders[6], senders[5], senders[4], senders[2], senders[1])
    ]

    for size in (1, 2, 3, 100):
        pages = await ids_of_pages(tenant, "all", size)
        assert [i for page in pages for i in page] == expected, size
        assert all(len(p) <= size for p in pages)

    # Assigned conversations leave Unassigned and show under the owner's Mine.
    owned = [made[senders[3]], made[senders[5]]]
    await Conversation.update(
        {Conversation.owner_id: tenant.agent.id, Conversation.owner_type: "agent"}
    ).where(Conversation.id.is_in([uuid.UUID(i) for i in owned]))
    unassigned = [i for p in await ids_of_pages(tenant, "unassigned", 2) for i in p]
    assert unassigned == [i for i in expected if i not in owned]
    mine, _ = await inbox.list_page(
        tenant.customer_id, tenant.agent.id, 0, inbox.InboxQuery(view="mine"), 100, ""
    )
    assert [str(r["id"]) for r in mine] == [i for i in expected if i in owned]


async def test_filters_and_the_listing_rule(any_engine):
    tenant = await make_tenant()
    first = (await store_inbound(sms(tenant.account, "+14155551001"))).conversation
    second = (await store_inbound(sms(tenant.account, "+14155551002"))).conversation
    await conversations.change_tags(tenant.customer_id, first["id"], tenant.admin.id, ADMIN, add=["vip"])
    await lifecycle.close_conversation(tenant.customer_id, second["id"], "api", tenant.admin.id, ADMIN)

    async def listed(**filters) -> set[str]:
        pages = await ids_of_pages(tenant, "all", 100, ListFilters(**filters))
        return {i for p in pages for i in p}

    assert await listed(tag="VIP") == {str(first["id"])}
    assert await listed(status="closed") == {str(second["id"])}
    assert await listed(status="open") == {str(first["id"])}
    assert await listed(peer="(415) 555-1002") == {str(second["id"])}

    # A plain agent lists only its own; Unassigned and All are the API's 403.
    for view in ("unassigned", "all"):
        with pytest.raises(Forbidden):
            await inbox.list_page(tenant.customer_id, tenant.agent.id, 0, inbox.InboxQuery(view=view), 10, "")
    assert inbox.views_for(0) == ("mine",)
    assert inbox.owner_filter(tenant.admin.id, ADMIN, "unassigned") == NIL_UUID

    # The row check of live pages agrees with the lists.
    query = inbox.InboxQuery(view="all", filters=ListFilters(status="open"))
    assert await inbox.listed_conversation(tenant.customer_id, tenant.admin.id, ADMIN, query, first["id"])
    assert not await inbox.listed_conversation(
        tenant.customer_id, tenant.admin.id, ADMIN, query, second["id"]
    )
    other = await make_tenant("+15550002000")
    assert not await inbox.listed_conversation(
        other.customer_id, other.admin.id, ADMIN, inbox.InboxQuery(view="all"), first["id"]
    )
