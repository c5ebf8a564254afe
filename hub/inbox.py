"""What the agent inbox reads: conversation lists in activity order (newest message first), and
the batched lookups a page of them needs (owners, participants, accounts), so a page costs a fixed
number of statements however many rows it shows. Rules and filters are the API's (hub.conversations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from piccolo.query import WhereRaw
from piccolo.querystring import QueryString

from hub import activeflows, conversations, participants
from hub.conversations import ListFilters
from hub.pagination import check_page_size, decode_token, encode_token
from hub.permissions import NIL_UUID, check_list_owner_filter, is_admin_or_manager
from hub.tables import Account, Agent, Conversation, Event

# The lists an agent sees; `unassigned` and `all` need admin or manager permission, as listing
# without one's own owner_id does in the API.
VIEWS = ("mine", "unassigned", "all")
# When a conversation last saw activity: its latest message, else its creation. Migration 0015's
# index `conversations_activity_page` (customer_id, COALESCE(tm_last_message, tm_create), id)
# serves this order: a page took ~60 ms at 100,000 conversations on PostgreSQL without it, 2 ms with.
ACTIVITY_SQL = "COALESCE(conversations.tm_last_message, conversations.tm_create)"
INBOX_ACTIVEFLOWS = 20


@dataclass(frozen=True)
class InboxQuery:
    view: str = "mine"
    filters: ListFilters = ListFilters()


def views_for(permission: int) -> tuple[str, ...]:
    return VIEWS if is_admin_or_manager(permission) else ("mine",)


def owner_filter(agent_id: UUID, permission: int, view: str) -> UUID | None:
    """The owner condition of a view, with the API's listing rule: an agent without admin or
    manager permission lists only its own conversations (anything else is 403)."""
    if view == "mine":
        return check_list_owner_filter(agent_id, permission, agent_id)
    # The API's check for "no owner_id": 403 for plain agents, whatever the view asks.
    check_list_owner_filter(agent_id, permission, None)
    return NIL_UUID if view == "unassigned" else None


def _conditions(customer_id: UUID, agent_id: UUID, permission: int, query: InboxQuery) -> list[Any]:
    owner = owner_filter(agent_id, permission, query.view)
    return conversations.list_conditions(customer_id, owner, query.filters)


async def list_page(
    customer_id: UUID,
    agent_id: UUID,
    permission: int,
    query: InboxQuery,
    page_size: int,
    page_token: str,
) -> tuple[list[dict[str, Any]], str]:
    """One page of the view, newest activity first (ties by id), keyset-paged like the API."""
    page_size = check_page_size(page_size)
    where = _conditions(customer_id, agent_id, permission, query)
    if page_token:
        stamp, last_id = decode_token(page_token)
        where.append(
            # The first bound is implied by the rest; alone it is the index range a later page
            # seeks to (the OR would only filter, walking every row before the page).
            WhereRaw(
                f"{ACTIVITY_SQL} <= {{}} AND ({ACTIVITY_SQL} < {{}} OR ({ACTIVITY_SQL} = {{}} "
                "AND conversations.id < {}))",
                stamp,
                stamp,
                stamp,
                last_id,
            )
        )
    rows = (
        await Conversation.select()
        .where(*where)
        .order_by(QueryString(ACTIVITY_SQL), Conversation.id, ascending=False)
        .limit(page_size + 1)
    )
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = encode_token(activity_of(rows[-1]), rows[-1]["id"])
    return rows, token


def activity_of(row: dict[str, Any]):
    return row.get("tm_last_message") or row["tm_create"]


async def listed_conversation(
    customer_id: UUID, agent_id: UUID, permission: int, query: InboxQuery, conversation_id: UUID
) -> dict[str, Any] | None:
    """The conversation when the view (with its filters) lists it, else None: what a live page
    asks when an event tells it a conversation changed."""
    where = _conditions(customer_id, agent_id, permission, query)
    return await Conversation.select().where(*where, Conversation.id == conversation_id).first()


async def agent_names(customer_id: UUID, agent_ids: list[UUID]) -> dict[UUID, str]:
    """Names (or usernames) of the customer's agents among `agent_ids`, in one statement."""
    wanted = [i for i in set(agent_ids) if i != NIL_UUID]
    if not wanted:
        return {}
    rows = await Agent.select(Agent.id, Agent.name, Agent.username).where(
        Agent.customer_id == customer_id, Agent.id.is_in(wanted)
    )
    return {r["id"]: r["name"] or r["username"] for r in rows}


async def assignable_agents(customer_id: UUID) -> list[dict[str, Any]]:
    """The customer's live agents, by name, for an assign menu."""
    rows = await Agent.select(Agent.id, Agent.name, Agent.username).where(
        Agent.customer_id == customer_id, Agent.tm_delete.is_null()
    )
    return sorted(rows, key=lambda r: ((r["name"] or r["username"]).lower(), str(r["id"])))


async def account_names(customer_id: UUID, account_ids: list[UUID]) -> dict[UUID, str]:
    wanted = list(set(account_ids))
    if not wanted:
        return {}
    rows = await Account.select(Account.id, Account.name, Account.type).where(
        Account.customer_id == customer_id, Account.id.is_in(wanted)
    )
    return {r["id"]: r["name"] or r["type"] for r in rows}


async def participants_by_conversation(conversation_ids: list[UUID]) -> dict[str, list[dict[str, Any]]]:
    return await participants.live_participants(conversation_ids)


def hub_choice(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The participant the hub sends a text through when none is named: the latest active (the
    channel rules may still skip it for a message it cannot carry)."""
    ordered = participants._by_activity(rows)
    return ordered[0] if ordered else None


async def conversation_activeflows(customer_id: UUID, conversation_id: UUID) -> list[dict[str, Any]]:
    """The conversation's latest activeflows (newest first)."""
    rows, _ = await activeflows.list_activeflows(customer_id, conversation_id, None, INBOX_ACTIVEFLOWS, "")
    return rows


async def latest_event_seq(customer_id: UUID) -> int:
    """The customer's latest outbox event: a page rendered now resumes the live stream after it,
    so nothing that happens between the render and the stream's start is missed."""
    row = (
        await Event.select(Event.seq)
        .where(Event.customer_id == customer_id)
        .order_by(Event.seq, ascending=False)
        .first()
    )
    return row["seq"] if row else 0
