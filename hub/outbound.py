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
from piccolo.engine.postgres import PostgresEngine

from hub import events, mail, participants
from hub.conversations import get_conversation, record_last_message
from hub.db import current_engine, transaction
from hub.errors import BadRequest, Conflict
from hub.models import Media, message_out
from hub.repo import now
from hub.tables import Account, Conversation, Message

PROGRESSING, DONE, FAILED = "progressing", "done", "failed"


@dataclass
class Delivery:
    message: dict[str, Any]
    # The account the message was recorded for (outbound selection); the participant's address
    # and our side of it are the message's own `destination` and `source`.
    account: dict[str, Any]

    @property
    def to(self) -> str:
        """The target the message goes to: its recorded destination (the participant's address)."""
        return _target(self.message.get("destination"))

    @property
    def sender(self) -> str:
        """Our side's target for this participant (the SMS number it wrote to, ...), "" if none."""
        return _target(self.message.get("source"))


def _target(address_json: str | None) -> str:
    try:
        address = msgspec.json.decode(address_json or "{}")
    except msgspec.DecodeError:
        return ""
    return str(address.get("target", "")) if isinstance(address, dict) else ""


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
    participant_id: UUID | None = None,
    email_subject: str = "",
) -> tuple[dict[str, Any], bool]:
    """Stores a `progressing` outgoing message; returns it and whether it is new.

    It goes through `participant_id` when given, else through the most recently active
    participant that can carry it (hub.participants.choose); the message records which.
    With an idempotency key already used by this customer, the first message comes back and
    nothing is written. `email_subject`: an email goes out with this subject instead of threading
    to the conversation's (a flow's message_send)."""
    conversation = await get_conversation(customer_id, conversation_id)
    if idempotency_key and (first := await _by_idempotency_key(customer_id, idempotency_key)):
        return _same_conversation(first, conversation_id), False
    if not text and not medias:
        raise BadRequest("a message needs text or medias")
    if conversation.get("status") == "closed":
        raise Conflict("the conversation is closed; reopen it to send")
    participant, account = await participants.choose(conversation_id, text, medias, participant_id)
    message_id = message_id or uuid.uuid4()
    stamp = now()
    row = Message(
        id=message_id,
        customer_id=customer_id,
        conversation_id=conversation_id,
        account_id=account["id"],
        participant_id=participant["id"],
        channel=account["type"],
        direction="outgoing",
        status=PROGRESSING,
        source=participant["self_address"],
        destination=participant["address"],
        text=text,
        medias=msgspec.json.encode(medias).decode(),
        activeflow_id=activeflow_id,
        idempotency_key=idempotency_key or None,
        tm_create=stamp,
        tm_update=stamp,
    )
    try:
        async with transaction(current_engine()):
            [message] = await Message.insert(row).returning(*Message.all_columns())
            if email_subject and account["type"] == "email":
                await mail.record_own_subject(message, _target(participant["address"]), email_subject)
            await record_last_message(conversation, message)
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
    """The message and its account: what one send attempt needs (two queries per attempt)."""
    message = await Message.select().where(Message.id == message_id).first()
    if message is None:
        return None
    account = await Account.select().where(Account.id == message["account_id"]).first()
    return Delivery(message, account)


# How far along a delivery is: the provider's reports only move it forward, so a late `sent`
# never undoes `delivered`, and the final reports (delivered, undelivered, failed) are final.
DELIVERY_RANK = {"": 0, "queued": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3}


def _advances(row: dict[str, Any], delivery_status: str) -> bool:
    return DELIVERY_RANK.get(delivery_status, 0) > DELIVERY_RANK.get(row.get("delivery_status") or "", 0)


def outcome_changes(
    row: dict[str, Any], status: str, provider_ids: list[str], reason: str, delivery_status: str = ""
) -> dict[str, Any]:
    """What a send attempt's outcome changes. A status callback may have come first (it can
    arrive before the send activity writes): then its verdict stands, and only the provider's
    ids are added."""
    changes: dict[str, Any] = {}
    if provider_ids and not row.get("provider_message_id"):
        changes["provider_message_id"] = provider_ids[0]
        changes["provider_message_ids"] = msgspec.json.encode(provider_ids).decode()
    if row["status"] == PROGRESSING:
        changes["status"], changes["reason"] = status, reason
    if delivery_status and _advances(row, delivery_status):
        changes["delivery_status"] = delivery_status
    return changes


def callback_changes(row: dict[str, Any], delivery_status: str, reason: str) -> dict[str, Any]:
    """What a provider status report changes: `delivery_status` (forward only) and, for a final
    report, `status` (delivered -> done if still progressing; failed/undelivered -> failed)."""
    if not _advances(row, delivery_status):
        return {}  # a repeated or out-of-order report
    changes: dict[str, Any] = {"delivery_status": delivery_status}
    if delivery_status == "delivered":
        changes["tm_delivered"] = now()
        if row["status"] == PROGRESSING:
            changes["status"], changes["reason"] = DONE, ""
    elif delivery_status in ("failed", "undelivered"):
        changes["status"], changes["reason"] = FAILED, reason or delivery_status
    return changes


async def _update(conditions: list[Any], compute) -> bool:
    """Locks the matching outgoing message, applies `compute(row)` and emits one update event."""
    async with transaction(current_engine()):
        query = Message.select().where(*conditions)
        if isinstance(current_engine(), PostgresEngine):
            query = query.lock_rows("UPDATE")
        row = await query.first()
        if row is None:
            return False
        changes = compute(row)
        if not changes:
            return False
        values = {getattr(Message, k): v for k, v in changes.items()}
        values[Message.tm_update] = now()
        [updated] = (
            await Message.update(values).where(Message.id == row["id"]).returning(*Message.all_columns())
        )
        owner = (
            await Conversation.select(Conversation.owner_id)
            .where(Conversation.id == updated["conversation_id"])
            .first()
        )
        await events.emit(_updated_event(updated, owner["owner_id"] if owner else None))
    return True


async def finish_delivery(
    message_id: UUID,
    status: str,
    provider_message_id: str = "",
    reason: str = "",
    provider_message_ids: list[str] | None = None,
    delivery_status: str = "",
) -> bool:
    """Records the outcome of a send attempt (see `outcome_changes`)."""
    ids = provider_message_ids or ([provider_message_id] if provider_message_id else [])
    return await _update(
        [Message.id == message_id, Message.direction == "outgoing"],
        lambda row: outcome_changes(row, status, ids, reason, delivery_status),
    )


async def apply_status_callback(
    account_id: UUID,
    provider_message_id: str,
    delivery_status: str,
    reason: str = "",
    message_id: UUID | None = None,
) -> bool:
    """A provider's status report on an outgoing message of `account_id`, matched by the hub's
    message id when the callback URL carries it (it may come before the provider id is
    recorded), else by the provider's id."""
    if delivery_status not in DELIVERY_RANK or not delivery_status:
        return False
    match = Message.id == message_id if message_id else Message.provider_message_id == provider_message_id
    return await _update(
        [match, Message.account_id == account_id, Message.direction == "outgoing"],
        lambda row: callback_changes(row, delivery_status, reason),
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
