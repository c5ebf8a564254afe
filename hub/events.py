"""The events outbox: each change is written here in the transaction that made it."""

from __future__ import annotations

import uuid
from uuid import UUID

import msgspec

from hub.tables import Event

CONVERSATION_CREATED = "conversation_created"
CONVERSATION_UPDATED = "conversation_updated"
CONVERSATION_DELETED = "conversation_deleted"
MESSAGE_CREATED = "conversation_message_created"
MESSAGE_UPDATED = "conversation_message_updated"
MESSAGE_DELETED = "conversation_message_deleted"
MESSAGE_RECEIVED = "conversation_message_received"

EVENT_TYPES = (
    CONVERSATION_CREATED,
    CONVERSATION_UPDATED,
    CONVERSATION_DELETED,
    MESSAGE_CREATED,
    MESSAGE_UPDATED,
    MESSAGE_DELETED,
    MESSAGE_RECEIVED,
)


def event_row(
    event_type: str,
    customer_id: UUID,
    data: msgspec.Struct,
    conversation_id: UUID | None = None,
    owner_id: UUID | None = None,
) -> Event:
    return Event(
        id=uuid.uuid4(),
        customer_id=customer_id,
        conversation_id=conversation_id,
        owner_id=owner_id,
        type=event_type,
        data=msgspec.json.encode(data).decode(),
    )


async def emit(*events: Event) -> None:
    """Insert events into the outbox; call inside the transaction of the change."""
    if events:
        await Event.insert(*events)


async def list_events(customer_id: UUID, after_seq: int = 0, limit: int = 100) -> list[dict]:
    return (
        await Event.select()
        .where(Event.customer_id == customer_id, Event.seq > after_seq)
        .order_by(Event.seq)
        .limit(limit)
    )
