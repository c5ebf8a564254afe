"""Outgoing messages: creation (with Idempotency-Key), delivery outcome, provider status callbacks."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from hub import events
from hub.conversations import get_conversation
from hub.db import current_engine, transaction
from hub.errors import BadRequest, Conflict
from hub.models import Media, message_out
from hub.repo import now
from hub.tables import Account, Conversation, Message

PROGRESSING, DONE, FAILED = "progressing", "done", "failed"
# Provider status callbacks that settle a message; "queued", "sent" and the like change nothing.
CALLBACK_STATUS = {"delivered": DONE, "failed": FAILED, "undelivered": FAILED}


@dataclass
class Delivery:
    message: dict[str, Any]
    conversation: dict[str, Any]
    account: dict[str, Any]


def _updated_event(row: dict[str, Any], owner_id: UUID | None = None):
    return events.event_row(
        events.MESSAGE_UPDATED, row["customer_id"], message_out(row), row["conversation_id"], owner_id
    )


async def _by_idempotency_key(customer_id: UUID, key: str) -> dict[str, Any] | None:
    return (
        await Message.select()
        .where(Message.customer_id == customer_id, Message.idempotency_key == key)
        .first()
    )


async def create_outgoing(
    customer_id: UUID,
    conversation_id: UUID,
    text: str,
    medias: list[Media],
    idempotency_key: str = "",
    activeflow_id: UUID | None = None,
    message_id: UUID | None = None,
) -> tuple[dict[str, Any], bool]:
    """Stores a `progressing` outgoing message; returns it and whether it is new.

    With an idempotency key already used by this customer, the first message comes back and
    nothing is written."""
    conversation = await get_conversation(customer_id, conversation_id)
    if idempotency_key and (first := await _by_idempotency_key(customer_id, idempotency_key)):
        return _same_conversation(first, conversation_id), False
    if not text and not medias:
        raise BadRequest("a message needs text or medias")
    account_live = await Account.exists().where(
        Account.id == conversation["account_id"], Account.tm_delete.is_null()
    )
    if not account_live:
        raise BadRequest("the conversation's account was deleted; nothing can be sent through it")
    message_id = message_id or uuid.uuid4()
    stamp = now()
    row = Message(
        id=message_id,
        customer_id=customer_id,
        conversation_id=conversation_id,
        account_id=conversation["account_id"],
        direction="outgoing",
        status=PROGRESSING,
        source=conversation["self_address"],
        destination=conversation["peer_address"],
        text=text,
        medias=msgspec.json.encode(medias).decode(),
        activeflow_id=activeflow_id,
        idempotency_key=idempotency_key or None,
        tm_create=stamp,
        tm_update=stamp,
    )
    try:
        async with transaction(current_engine()):
            await Message.insert(row)
            message = await Message.select().where(Message.id == message_id).first()
            await events.emit(
                events.event_row(
                    events.MESSAGE_CREATED,
                    customer_id,
                    message_out(message),
                    conversation_id,
                    conversation["owner_id"],
                )
            )
    except (asyncpg.UniqueViolationError, sqlite3.IntegrityError):
        # A concurrent retry with the same key got there first.
        if idempotency_key and (first := await _by_idempotency_key(customer_id, idempotency_key)):
            return _same_conversation(first, conversation_id), False
        raise
    return message, True


def _same_conversation(first: dict[str, Any], conversation_id: UUID) -> dict[str, Any]:
    if str(first["conversation_id"]) != str(conversation_id):
        raise Conflict("this Idempotency-Key was used for a message of another conversation")
    return first


async def load_delivery(message_id: UUID) -> Delivery | None:
    message = await Message.select().where(Message.id == message_id).first()
    if message is None:
        return None
    conversation = await Conversation.select().where(Conversation.id == message["conversation_id"]).first()
    account = await Account.select().where(Account.id == message["account_id"]).first()
    return Delivery(message, conversation, account)


async def _settle(conditions: list[Any], status: str, reason: str, provider_message_id: str = "") -> bool:
    """Moves matching messages to `status` (only from a different status) and emits the update."""
    values: dict[Any, Any] = {Message.status: status, Message.reason: reason, Message.tm_update: now()}
    if provider_message_id:
        values[Message.provider_message_id] = provider_message_id
    async with transaction(current_engine()):
        rows = (
            await Message.update(values)
            .where(*conditions, Message.status != status)
            .returning(*Message.all_columns())
        )
        for row in rows:
            owner = (
                await Conversation.select(Conversation.owner_id)
                .where(Conversation.id == row["conversation_id"])
                .first()
            )
            await events.emit(_updated_event(row, owner["owner_id"] if owner else None))
    return bool(rows)


async def finish_delivery(
    message_id: UUID, status: str, provider_message_id: str = "", reason: str = ""
) -> bool:
    """Records the outcome of a send attempt; only a `progressing` message changes."""
    return await _settle(
        [Message.id == message_id, Message.status == PROGRESSING], status, reason, provider_message_id
    )


async def apply_status_callback(
    account_id: UUID, provider_message_id: str, provider_status: str, reason: str = ""
) -> bool:
    status = CALLBACK_STATUS.get(provider_status.lower())
    if status is None:
        return False
    return await _settle(
        [
            Message.account_id == account_id,
            Message.provider_message_id == provider_message_id,
            Message.direction == "outgoing",
        ],
        status,
        reason if status == FAILED else "",
    )


async def stuck_outgoing(older_than_s: float, limit: int = 500) -> list[dict[str, Any]]:
    """Outgoing messages still `progressing` after `older_than_s`: their send may never have started."""
    return (
        await Message.select(Message.id, Message.customer_id, Message.conversation_id, Message.account_id)
        .where(
            Message.direction == "outgoing",
            Message.status == PROGRESSING,
            # A flow's messages are delivered by the flow's own (retrying) activity.
            Message.activeflow_id.is_null(),
            Message.tm_create < now() - timedelta(seconds=older_than_s),
        )
        .order_by(Message.tm_create)
        .limit(limit)
    )
