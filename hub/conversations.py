"""Conversations: listing, reading, assignment, deletion (room matching: hub/participants.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hub import events, participants
from hub.db import current_engine, transaction
from hub.errors import BadRequest
from hub.models import conversation_out
from hub.pagination import fetch_page
from hub.permissions import NIL_UUID, check_unassign, owner_type_for
from hub.repo import get_scoped, now
from hub.tables import Agent, Conversation

BAD_OWNER = "owner_id does not reference an agent of this customer"


async def list_conversations(
    customer_id: UUID, owner_id: UUID | None, page_size: int, page_token: str
) -> tuple[list[dict[str, Any]], str]:
    conditions = [Conversation.customer_id == customer_id, Conversation.tm_delete.is_null()]
    if owner_id is not None:
        conditions.append(Conversation.owner_id == owner_id)
    return await fetch_page(Conversation, conditions, page_size, page_token)


async def get_conversation(customer_id: UUID, conversation_id: UUID) -> dict[str, Any]:
    return await get_scoped(Conversation, customer_id, conversation_id)


def _updated_event(
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
    """Partial update of name, detail and owner_id; owner_type follows owner_id."""
    values = {k: v for k, v in values.items() if k in ("name", "detail", "owner_id")}
    async with transaction(current_engine()):
        # The conversation first: another customer's id is 404 whatever owner_id the body names.
        before = await get_conversation(customer_id, conversation_id)
        if "owner_id" in values:
            await _validate_owner(customer_id, values["owner_id"])
            values["owner_type"] = owner_type_for(values["owner_id"])
        if not values:
            return await get_conversation(customer_id, conversation_id)
        values["tm_update"] = now()
        await Conversation.update({getattr(Conversation, k): v for k, v in values.items()}).where(
            Conversation.id == conversation_id
        )
        row = await get_conversation(customer_id, conversation_id)
        live = await participants.participants_of(row["id"])
        await events.emit(_updated_event(row, before["owner_id"], live))
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
        await events.emit(_updated_event(row, previous_owner_id if changed else None, live))
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
    await events.emit(*[_updated_event(row, agent_id, live[str(row["id"])]) for row in rows])


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
