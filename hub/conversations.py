"""Conversations: listing, reading, assignment, deletion (room matching: hub/participants.py)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import msgspec
from piccolo.engine.postgres import PostgresEngine

from hub import events, list_pg, participants
from hub.accounts import CONVERSATION_TYPE
from hub.addresses import normalize_target, normalize_tel
from hub.db import current_engine, pg_fetch, transaction
from hub.errors import BadRequest
from hub.models import ConversationOut, conversation_out, last_message_json, listed_conversation_out
from hub.pagination import check_page_size, decode_token, fetch_page, page_of
from hub.permissions import NIL_UUID, check_owner_or_admin, check_unassign, owner_type_for
from hub.repo import get_scoped, now
from hub.tables import Agent, Conversation, Message, Participant, StoredMedia
from hub.tags import normalize_tag, normalize_tags, store_tags, tag_filter, tagged_in_list_order, tags_of

CONVERSATION_TYPES = tuple(dict.fromkeys(CONVERSATION_TYPE.values()))
BAD_OWNER = "owner_id does not reference an agent of this customer"


STATUSES = ("open", "closed")


@dataclass(frozen=True)
class ListFilters:
    """`GET /conversations` filters; None = not filtered. All combine (AND)."""

    status: str | None = None
    tag: str | None = None
    account_id: UUID | None = None
    type: str | None = None
    # An address target (phone number, email address, LINE id), normalised like inbound.
    peer: str | None = None


async def list_conversations(
    customer_id: UUID,
    owner_id: UUID | None,
    page_size: int,
    page_token: str,
    filters: ListFilters | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """One page of conversation rows (newest first) and the next page's token ("")."""
    rows, token = await _list_rows(customer_id, owner_id, page_size, page_token, filters or ListFilters())
    return [dict(row) for row in rows], token


async def list_page(
    customer_id: UUID,
    owner_id: UUID | None,
    page_size: int,
    page_token: str,
    filters: ListFilters | None = None,
) -> tuple[list[ConversationOut], str]:
    """`list_conversations` in its public form (what `GET /conversations` answers)."""
    rows, token = await _list_rows(customer_id, owner_id, page_size, page_token, filters or ListFilters())
    return [listed_conversation_out(row) for row in rows], token


async def _list_rows(
    customer_id: UUID, owner_id: UUID | None, page_size: int, page_token: str, filters: ListFilters
) -> tuple[list[Any], str]:
    """The page's rows: asyncpg Records through one prepared statement on PostgreSQL
    (hub/list_pg.py), Piccolo's dicts on SQLite; checked in the same order either way (filters,
    page size, page token)."""
    engine = current_engine()
    if not isinstance(engine, PostgresEngine):
        conditions, order = list_query_parts(customer_id, owner_id, filters)
        return await fetch_page(Conversation, conditions, page_size, page_token, order)
    sql, args = list_statement(customer_id, owner_id, page_size, page_token, filters)
    return page_of(await pg_fetch(engine, sql, args), page_size)


def list_statement(
    customer_id: UUID, owner_id: UUID | None, page_size: int, page_token: str, filters: ListFilters
) -> tuple[str, list[Any]]:
    """The PostgreSQL statement of one list page and its arguments (hub/list_pg.py)."""
    tag = normalize_tag(filters.tag) if filters.tag is not None else None
    status = checked_status(filters.status) if filters.status is not None else None
    type_ = checked_type(filters.type) if filters.type is not None else None
    peer = peer_address(filters.peer) if filters.peer is not None else None
    page_size = check_page_size(page_size)
    after = decode_token(page_token) if page_token else None
    return list_pg.page_statement(
        customer_id, owner_id, status, filters.account_id, type_, peer, tag, after, page_size + 1
    )


def list_query_parts(
    customer_id: UUID, owner_id: UUID | None, filters: ListFilters
) -> tuple[list[Any], tuple[Any, Any] | None]:
    """The list's conditions and its order columns (None: the conversations' own). A tag filter
    drives the list through the tag's rows in list order (hub/tags.py)."""
    if filters.tag is None:
        return list_conditions(customer_id, owner_id, filters), None
    tagged, order = tagged_in_list_order(customer_id, filters.tag)
    return list_conditions(customer_id, owner_id, replace(filters, tag=None)) + tagged, order


def list_conditions(customer_id: UUID, owner_id: UUID | None, filters: ListFilters) -> list[Any]:
    """The where-conditions of a conversation list (400 for a bad filter value)."""
    conditions = [Conversation.customer_id == customer_id, Conversation.tm_delete.is_null()]
    if owner_id is not None:
        conditions.append(Conversation.owner_id == owner_id)
    if filters.tag is not None:
        conditions.append(tag_filter(customer_id, filters.tag))
    if filters.status is not None:
        conditions.append(Conversation.status == checked_status(filters.status))
    if filters.account_id is not None:
        conditions.append(Conversation.account_id == filters.account_id)
    if filters.type is not None:
        conditions.append(Conversation.type == checked_type(filters.type))
    if filters.peer is not None:
        conditions.append(_peer_filter(customer_id, filters.peer))
    return conditions


def checked_status(status: str) -> str:
    if status not in STATUSES:
        raise BadRequest("status must be open or closed")
    return status


def checked_type(type_: str) -> str:
    if type_ not in CONVERSATION_TYPES:
        raise BadRequest(f"type must be one of {', '.join(CONVERSATION_TYPES)}")
    return type_


def peer_address(peer: str) -> tuple[str, str]:
    """The (address_type, target) a peer filter names: a phone number in any common spelling, an
    email address in any case, a LINE id (400 when it is none of them)."""
    value = peer.strip()
    if "@" in value:
        address_type, target = "email", normalize_target("email", value)
    elif tel := normalize_tel(value):
        address_type, target = "tel", tel
    else:
        address_type, target = "line", value
    if not target:
        raise BadRequest("peer must be a phone number, an email address or a LINE id")
    return address_type, target


def _peer_filter(customer_id: UUID, peer: str):
    """Conversations with a live participant at this address (of any of its conversations'
    statuses)."""
    address_type, target = peer_address(peer)
    holders = Participant.select(Participant.conversation_id).where(
        Participant.customer_id == customer_id,
        Participant.address_type == address_type,
        Participant.target == target,
        Participant.tm_delete.is_null(),
    )
    return Conversation.id.is_in(holders)


async def get_conversation(customer_id: UUID, conversation_id: UUID) -> dict[str, Any]:
    return await get_scoped(Conversation, customer_id, conversation_id)


def updated_event(
    row: dict[str, Any], previous_owner_id: UUID | None = None, live: list[dict[str, Any]] | None = None
):
    return events.event_row(
        events.CONVERSATION_UPDATED,
        row["customer_id"],
        conversation_out(row, live),
        conversation_id=row["id"],
        owner_id=row["owner_id"],
        previous_owner_id=previous_owner_id,
    )


async def updated_event_now(row: dict[str, Any], previous_owner_id: UUID | None = None):
    """`conversation_updated` for `row`, with its live participants read now."""
    return updated_event(row, previous_owner_id, await participants.participants_of(row["id"]))


async def _validate_owner(customer_id: UUID, owner_id: UUID) -> None:
    if owner_id == NIL_UUID:
        return
    # Unknown agent and another customer's agent answer identically, on purpose.
    exists = await Agent.exists().where(
        Agent.id == owner_id, Agent.customer_id == customer_id, Agent.tm_delete.is_null()
    )
    if not exists:
        raise BadRequest(BAD_OWNER)


async def update_conversation(
    customer_id: UUID, conversation_id: UUID, values: dict[str, Any]
) -> dict[str, Any]:
    """Partial update of name, detail, owner_id and tags; owner_type follows owner_id."""
    values = {k: v for k, v in values.items() if k in ("name", "detail", "owner_id", "tags")}
    tags = normalize_tags(values.pop("tags")) if "tags" in values else None
    async with transaction(current_engine()):
        # The conversation first: another customer's id is 404 whatever owner_id the body names.
        if tags is None:
            before = await get_conversation(customer_id, conversation_id)
        else:
            before = await locked_conversation(customer_id, conversation_id)
        if "owner_id" in values:
            await _validate_owner(customer_id, values["owner_id"])
            values["owner_type"] = owner_type_for(values["owner_id"])
        if tags is not None:
            await store_tags(before, tags)
        elif not values:
            return before
        values["tm_update"] = now()
        await Conversation.update({getattr(Conversation, k): v for k, v in values.items()}).where(
            Conversation.id == conversation_id
        )
        row = await get_conversation(customer_id, conversation_id)
        live = await participants.participants_of(row["id"])
        await events.emit(updated_event(row, before["owner_id"], live))
    return row


async def record_last_message(conversation: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Makes `message` the conversation's `last_message` unless a later one is recorded already;
    inside the transaction that stored the message. Returns the conversation as it is now."""
    stamp, summary = message["tm_create"], last_message_json(message)
    await Conversation.update(
        {Conversation.tm_last_message: stamp, Conversation.last_message: summary}
    ).where(
        Conversation.id == conversation["id"],
        Conversation.tm_last_message.is_null() | (Conversation.tm_last_message <= stamp),
    )
    current = conversation.get("tm_last_message")
    if current is not None and current > stamp:
        return conversation
    return {**conversation, "tm_last_message": stamp, "last_message": summary}


async def forget_last_message(conversation_id: UUID, message_id: UUID) -> None:
    """After `message_id` was deleted: if it was the last message, the latest live one takes its
    place (or none). Inside the deleting transaction."""
    row = (
        await Conversation.select(Conversation.last_message).where(Conversation.id == conversation_id).first()
    )
    last = msgspec.json.decode(row["last_message"]) if row and row["last_message"] else {}
    if str(last.get("id", "")) != str(message_id):
        return
    latest = (
        await Message.select()
        .where(Message.conversation_id == conversation_id, Message.tm_delete.is_null())
        .order_by(Message.tm_create, Message.id, ascending=False)
        .first()
    )
    await Conversation.update(
        {
            Conversation.tm_last_message: latest["tm_create"] if latest else None,
            Conversation.last_message: last_message_json(latest) if latest else "",
        }
    ).where(Conversation.id == conversation_id)


async def locked_conversation(customer_id: UUID, conversation_id: UUID) -> dict[str, Any]:
    """The live conversation, its row locked until the transaction ends (PostgreSQL; SQLite
    serialises writers anyway), so read-modify-write changes such as tag edits never lose one."""
    await get_conversation(customer_id, conversation_id)
    # A write that changes nothing, for its row lock.
    await Conversation.raw("UPDATE conversations SET tags = tags WHERE id = {}", conversation_id)
    return await get_conversation(customer_id, conversation_id)


async def change_tags(
    customer_id: UUID,
    conversation_id: UUID,
    agent_id: UUID,
    permission: int,
    add: list[str] = (),  # type: ignore[assignment]
    remove: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    """Add and remove tags (the owning agent or admin/manager); `conversation_updated` on a change."""
    added = normalize_tags(add)
    removed = {normalize_tag(t) for t in remove}
    async with transaction(current_engine()):
        row = await locked_conversation(customer_id, conversation_id)
        check_owner_or_admin(agent_id, permission, row["owner_id"], "tag")
        current = tags_of(row)
        tags = normalize_tags(
            [t for t in current if t not in removed] + [t for t in added if t not in current]
        )
        if tags == current:
            return row
        await store_tags(row, tags)
        row = await get_conversation(customer_id, conversation_id)
        await events.emit(await updated_event_now(row))
    return row


async def unassign(
    customer_id: UUID, conversation_id: UUID, agent_id: UUID, permission: int
) -> dict[str, Any]:
    async with transaction(current_engine()):
        row = await get_conversation(customer_id, conversation_id)
        check_unassign(agent_id, permission, row["owner_id"])
        # The owner condition keeps a concurrent reassignment from being undone by a stale check.
        changed = (
            await Conversation.update(
                {Conversation.owner_id: NIL_UUID, Conversation.owner_type: "", Conversation.tm_update: now()}
            )
            .where(Conversation.id == conversation_id, Conversation.owner_id == row["owner_id"])
            .returning(Conversation.id)
        )
        previous_owner_id = row["owner_id"]
        row = await get_conversation(customer_id, conversation_id)
        if not changed:
            check_unassign(agent_id, permission, row["owner_id"])
        live = await participants.participants_of(row["id"])
        await events.emit(updated_event(row, previous_owner_id if changed else None, live))
    return row


async def unassign_all(customer_id: UUID, agent_id: UUID) -> None:
    """Unassign every live conversation of `agent_id`; call inside a transaction."""
    rows = (
        await Conversation.update(
            {Conversation.owner_id: NIL_UUID, Conversation.owner_type: "", Conversation.tm_update: now()}
        )
        .where(
            Conversation.customer_id == customer_id,
            Conversation.owner_id == agent_id,
            Conversation.tm_delete.is_null(),
        )
        .returning(*Conversation.all_columns())
    )
    live = await participants.live_participants([row["id"] for row in rows])
    await events.emit(*[updated_event(row, agent_id, live[str(row["id"])]) for row in rows])


async def delete_conversation(customer_id: UUID, conversation_id: UUID) -> dict[str, Any]:
    async with transaction(current_engine()):
        await get_conversation(customer_id, conversation_id)
        stamp = now()
        # Participants first (the lock order of hub/participants.py); a deleted conversation
        # never matches again.
        await participants.remove_all(conversation_id, stamp)
        await Conversation.update({Conversation.tm_delete: stamp, Conversation.tm_update: stamp}).where(
            Conversation.id == conversation_id
        )
        # The attachments the hub keeps go with it (the messages stay, hidden, for dedupe).
        # Through the messages' index: media has none on conversation_id.
        await StoredMedia.delete().where(
            StoredMedia.message_id.is_in(
                Message.select(Message.id).where(Message.conversation_id == conversation_id)
            )
        )
        row = await get_scoped(Conversation, customer_id, conversation_id, include_deleted=True)
        await events.emit(
            events.event_row(
                events.CONVERSATION_DELETED,
                customer_id,
                conversation_out(row),
                conversation_id=conversation_id,
                owner_id=row["owner_id"],
            )
        )
    return row
