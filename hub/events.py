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


async def list_events(
    customer_id: UUID, after_seq: int = 0, limit: int = 100, owner_id: UUID | None = None
) -> list[dict]:
    """Events of a customer after `after_seq` in `seq` order; only `owner_id`'s when given."""
    conditions = [Event.customer_id == customer_id, Event.seq > after_seq]
    if owner_id is not None:
        conditions.append(Event.owner_id == owner_id)
    return await Event.select().where(*conditions).order_by(Event.seq).limit(limit)


# --- the live stream and webhook bodies -------------------------------------------------------


class StreamEvent(msgspec.Struct, kw_only=True):
    """An event as it travels to live subscribers; `data` is the outbox JSON, untouched."""

    seq: int
    id: UUID
    type: str
    conversation_id: UUID | None = None
    owner_id: UUID | None = None
    data: msgspec.Raw = msgspec.Raw(b"{}")


def channel_for(customer_id: UUID) -> str:
    """The live-stream channel of a customer's events."""
    return f"hub.events.{customer_id}"


def stream_event(row: dict) -> StreamEvent:
    return StreamEvent(
        seq=row["seq"],
        id=row["id"],
        type=row["type"],
        conversation_id=row["conversation_id"],
        owner_id=row["owner_id"],
        data=msgspec.Raw(row["data"].encode()),
    )


def payload(event_type: str, data: str | bytes) -> bytes:
    """`{"type": ..., "data": ...}`: the body of a webhook and of a live-stream message."""
    raw = data.encode() if isinstance(data, str) else data
    return b'{"type":' + msgspec.json.encode(event_type) + b',"data":' + raw + b"}"


def visible_to(owner_id: UUID | None, agent_id: UUID, sees_all: bool) -> bool:
    """Admins and managers see every event of their customer; an agent those of conversations
    it owned when the event happened."""
    return sees_all or owner_id == agent_id
