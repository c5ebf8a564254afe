"""Inbound messages: dedupe, room matching, storage and events, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hub import activeflows, events
from hub.accounts import CONVERSATION_TYPE
from hub.addresses import Address, normalize_target, normalize_tel
from hub.contacts import find_contact_name
from hub.conversations import find_room, upsert_room
from hub.db import current_engine, transaction
from hub.errors import BadRequest
from hub.models import Media, MessageReceived, conversation_out, message_out
from hub.repo import now
from hub.tables import Account, Conversation, Message
from hub.titles import auto_title


@dataclass
class InboundMessage:
    account: dict[str, Any]
    peer: Address
    self_address: Address
    provider_message_id: str
    text: str = ""
    medias: list[Media] = field(default_factory=list)
    # A display name the provider told us (LINE profile); SMS peers are named by contacts.
    peer_display_name: str = ""
    # Who wrote, when that is not the peer (a member of a LINE group); None = the peer.
    sender: Address | None = None
    # The provider's raw message type (LINE: text, sticker, location...); "" = plain text.
    content_type: str = ""
    # A LINE follow/join: it opens the conversation and carries no message.
    opens_only: bool = False
    # How to learn the peer's name for a new conversation (hub.channels.NameLookup), None = no way.
    name_lookup: Any = None
    # The channel's own rows (email headers, attachments): awaited with the stored message, in
    # its transaction (not for a duplicate).
    stored_with: Any = None


@dataclass
class InboundResult:
    conversation: dict[str, Any]
    message: dict[str, Any]
    conversation_created: bool
    duplicate: bool
    # The run this message triggered whose workflow is not confirmed started yet (None if none).
    activeflow: dict[str, Any] | None = None


class _Duplicate(Exception):
    pass


async def _existing(account_id: uuid.UUID, provider_message_id: str) -> dict[str, Any] | None:
    return (
        await Message.select()
        .where(Message.account_id == account_id, Message.provider_message_id == provider_message_id)
        .first()
    )


async def _result_for_duplicate(message: dict[str, Any]) -> InboundResult:
    conversation = await Conversation.select().where(Conversation.id == message["conversation_id"]).first()
    # A provider retry after a failed workflow start gets to try the start again.
    pending = await activeflows.unstarted_for_message(message["id"])
    return InboundResult(
        conversation, message, conversation_created=False, duplicate=True, activeflow=pending
    )


async def store_inbound(inbound: InboundMessage) -> InboundResult:
    """One transaction: room upsert (row locked on PostgreSQL), message insert deduplicated by
    the provider's id, outbox events, and the activeflow if the conversation has no owner."""
    account = inbound.account
    conversation_type = CONVERSATION_TYPE[account["type"]]
    peer = msgspec.structs.replace(inbound.peer, target_name=inbound.peer_display_name)
    title = auto_title(conversation_type, peer.target, inbound.peer_display_name)
    try:
        async with transaction(current_engine()):
            conversation, created = await upsert_room(
                account["customer_id"], account["id"], conversation_type, inbound.self_address, peer, title
            )
            if created and not inbound.peer_display_name:
                # Only a new room needs a name; the contact lookup stays off the hot path.
                conversation = await _name_from_contacts(conversation, conversation_type, peer)
            stamp = now()
            inserted = (
                await Message.insert(
                    Message(
                        id=uuid.uuid4(),
                        customer_id=account["customer_id"],
                        conversation_id=conversation["id"],
                        account_id=account["id"],
                        direction="incoming",
                        status="done",
                        source=msgspec.json.encode(inbound.sender or peer).decode(),
                        destination=msgspec.json.encode(inbound.self_address).decode(),
                        text=inbound.text,
                        medias=msgspec.json.encode(inbound.medias).decode(),
                        provider_message_id=inbound.provider_message_id,
                        content_type=inbound.content_type,
                        tm_create=stamp,
                        tm_update=stamp,
                    )
                )
                .on_conflict(action="DO NOTHING")
                .returning(*Message.all_columns())
            )
            if not inserted:
                # This provider message is stored already (a retry, or a concurrent delivery
                # that won); undo the upsert too.
                raise _Duplicate
            message = inserted[0]
            if inbound.stored_with is not None:
                await inbound.stored_with(message)
            await events.emit(*_inbound_events(conversation, message, created))
            activeflow = await activeflows.create_for_message(account, conversation, message)
    except _Duplicate:
        existing = await _existing(account["id"], inbound.provider_message_id)
        return await _result_for_duplicate(existing)
    return InboundResult(conversation, message, created, duplicate=False, activeflow=activeflow)


async def _name_from_contacts(conversation: dict[str, Any], conversation_type: str, peer: Address):
    known = await find_contact_name(conversation["customer_id"], peer.type, peer.target)
    if not known:
        return conversation
    name, detail = auto_title(conversation_type, peer.target, known)
    peer_address = msgspec.json.encode(msgspec.structs.replace(peer, target_name=known)).decode()
    await Conversation.update(
        {Conversation.name: name, Conversation.detail: detail, Conversation.peer_address: peer_address}
    ).where(Conversation.id == conversation["id"])
    return {**conversation, "name": name, "detail": detail, "peer_address": peer_address}


def _inbound_events(conversation: dict[str, Any], message: dict[str, Any], created: bool) -> list:
    customer_id, conversation_id = conversation["customer_id"], conversation["id"]
    owner_id = conversation["owner_id"]
    out = message_out(message)
    rows = []
    if created:
        rows.append(
            events.event_row(
                events.CONVERSATION_CREATED,
                customer_id,
                conversation_out(conversation),
                conversation_id,
                owner_id,
            )
        )
    rows.append(events.event_row(events.MESSAGE_CREATED, customer_id, out, conversation_id, owner_id))
    rows.append(
        events.event_row(
            events.MESSAGE_RECEIVED,
            customer_id,
            MessageReceived(conversation_id=conversation_id, message=out),
            conversation_id,
            owner_id,
        )
    )
    return rows


async def open_room(
    account: dict[str, Any], self_address: Address, peer: Address, display_name: str
) -> tuple[dict[str, Any], bool]:
    """The conversation with `peer` without a message (a LINE follow), created if it is new."""
    conversation_type = CONVERSATION_TYPE[account["type"]]
    peer = msgspec.structs.replace(peer, target_name=display_name)
    title = auto_title(conversation_type, peer.target, display_name)
    async with transaction(current_engine()):
        conversation, created = await upsert_room(
            account["customer_id"], account["id"], conversation_type, self_address, peer, title
        )
        if created:
            await events.emit(_created_event(conversation))
    return conversation, created


async def room_exists(account: dict[str, Any], self_target: str, peer_target: str) -> bool:
    conversation_type = CONVERSATION_TYPE[account["type"]]
    return (
        await find_room(account["customer_id"], account["id"], conversation_type, self_target, peer_target)
        is not None
    )


def _created_event(conversation: dict[str, Any]):
    return events.event_row(
        events.CONVERSATION_CREATED,
        conversation["customer_id"],
        conversation_out(conversation),
        conversation["id"],
        conversation["owner_id"],
    )


def self_address_of(account: dict[str, Any]) -> Address:
    """Our side of every conversation of an account: its number (SMS) or the account itself (LINE)."""
    if account["type"] == "line":
        return Address(type="line", target=str(account["id"]), name=account["name"])
    if account["type"] == "email":
        return Address(type="email", target=account["address"], name=account["name"])
    return Address(type="tel", target=account["number"], name=account["name"])


async def room_for_destination(
    customer_id: uuid.UUID, account_id: uuid.UUID, destination: str
) -> dict[str, Any]:
    """The live conversation between an account and a destination, created if new (message_send)."""
    account = (
        await Account.select()
        .where(Account.id == account_id, Account.customer_id == customer_id, Account.tm_delete.is_null())
        .first()
    )
    if account is None:
        raise BadRequest(f"account {account_id} is not a live account of this customer")
    if account["type"] == "sms":
        target = normalize_tel(destination)
        if not target:
            raise BadRequest(f"destination {destination!r} is not a phone number")
        peer = Address(type="tel", target=target)
        known = await find_contact_name(customer_id, "tel", target)
    elif account["type"] == "email":
        target = normalize_target("email", destination)
        if "@" not in target:
            raise BadRequest(f"destination {destination!r} is not an email address")
        peer = Address(type="email", target=target)
        known = await find_contact_name(customer_id, "email", target)
    else:
        peer, known = Address(type="line", target=destination.strip()), ""
    conversation, _ = await open_room(account, self_address_of(account), peer, known)
    return conversation
