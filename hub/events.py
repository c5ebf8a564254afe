"""The events outbox: each change is written here in the transaction that made it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from uuid import UUID

import msgspec

from hub.permissions import NIL_UUID
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
    previous_owner_id: UUID | None = None,
) -> Event:
    """An outbox row. `previous_owner_id`: the owner before this change, when it moved the
    conversation to another owner (the event is then the previous owner's too)."""
    return Event(
        id=uuid.uuid4(),
        customer_id=customer_id,
        conversation_id=conversation_id,
        owner_id=owner_id,
        previous_owner_id=None if previous_owner_id in (owner_id, NIL_UUID) else previous_owner_id,
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
    """Events of a customer after `after_seq` in `seq` order; only `owner_id`'s when given (those
    of its conversations, and the one that took a conversation away from it)."""
    conditions: list = [Event.customer_id == customer_id, Event.seq > after_seq]
    if owner_id is not None:
        conditions.append((Event.owner_id == owner_id) | (Event.previous_owner_id == owner_id))
    return await Event.select().where(*conditions).order_by(Event.seq).limit(limit)


# --- the live stream and webhook bodies -------------------------------------------------------


class StreamEvent(msgspec.Struct, kw_only=True):
    """An event as it travels to live subscribers; `data` is the outbox JSON, untouched."""

    seq: int
    id: UUID
    type: str
    conversation_id: UUID | None = None
    owner_id: UUID | None = None
    # The owner before the change, on events that moved the conversation to another owner.
    previous_owner_id: UUID | None = None
    # When the event happened (the outbox row's time): the body's `timestamp`.
    tm_create: datetime | None = None
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
        previous_owner_id=row.get("previous_owner_id"),
        tm_create=row.get("tm_create"),
        data=msgspec.Raw(row["data"].encode()),
    )


def payload(event_type: str, data: str | bytes, timestamp: datetime | None) -> bytes:
    """`{"type", "timestamp", "data"}` (Standard Webhooks' payload structure; `timestamp` is when
    the event happened, RFC 3339 UTC): the body of a webhook and of a live-stream message."""
    raw = data.encode() if isinstance(data, str) else data
    stamp = msgspec.json.encode(timestamp.astimezone(UTC) if timestamp is not None else None)
    return b'{"type":' + msgspec.json.encode(event_type) + b',"timestamp":' + stamp + b',"data":' + raw + b"}"


def visible_to(event: StreamEvent, agent_id: UUID, sees_all: bool) -> bool:
    """Admins and managers see every event of their customer; an agent those of conversations
    it owned when the event happened, before or after it (so it learns it lost one)."""
    return sees_all or agent_id in (event.owner_id, event.previous_owner_id)
