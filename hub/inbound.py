"""Inbound messages: dedupe, room matching, storage and events, in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from piccolo.engine.postgres import PostgresEngine

from hub import activeflows, dialogues, events, inbound_pg, metrics, participants
from hub.accounts import CONVERSATION_TYPE
from hub.addresses import Address, normalize_target, normalize_tel
from hub.channels import InboundMessage  # noqa: F401 - the channels build it; importable from here
from hub.conversations import record_last_message
from hub.db import current_engine, transaction
from hub.errors import BadRequest
from hub.group_commit import GroupCommit
from hub.models import MessageReceived, conversation_out, last_message_json, message_out
from hub.repo import now
from hub.tables import Account, Conversation, Message


@dataclass
class InboundResult:
    conversation: dict[str, Any]
    message: dict[str, Any]
    conversation_created: bool
    duplicate: bool
    # The run this message triggered whose workflow is not confirmed started yet (None if none).
    activeflow: dict[str, Any] | None = None
    # The message went to a run in dialogue instead: its dialogue_messages row, to signal.
    dialogue: dict[str, Any] | None = None


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
    """One transaction: room matching over participants (rows locked on PostgreSQL), message
    insert deduplicated by the provider's id, outbox events, and the activeflow if the
    conversation has no owner. On PostgreSQL a message to a room the address is in already (the
    hot path) is two plain statements (hub.inbound_pg); everything else goes through Piccolo."""
    account = inbound.account
    conversation_type = CONVERSATION_TYPE[account["type"]]
    peer = msgspec.structs.replace(inbound.peer, target_name=inbound.peer_display_name)
    engine = current_engine()
    if _single_statement_possible(engine, inbound):
        result = await _store_in_owned_room(engine, inbound, peer)
        if result is not None:
            return result
    try:
        async with transaction(engine) as txn:
            stamp = now()
            conn = inbound_pg.connection_of(txn) if inbound.stored_with is None else None
            room = None
            if conn is not None:
                room = await inbound_pg.touch(
                    conn, account["customer_id"], account["id"], peer.type, peer.target, stamp
                )
            if room is None:
                conn = None  # a new room or a joining address: the general path
                room = await participants.match_room(
                    account, conversation_type, inbound.self_address, peer, stamp
                )
            conversation = room.conversation
            row = _message_row(account, conversation, room.participant, inbound, peer, stamp)
            if conn is not None:
                message = row.to_dict()
                summary = last_message_json(message)
                outbox = _message_events(conversation, message)
                stored, latest = await inbound_pg.store(conn, message, summary, outbox)
                if not stored:
                    raise _Duplicate
                if latest:
                    conversation = {**conversation, "tm_last_message": stamp, "last_message": summary}
                room.conversation = conversation
            else:
                inserted = (
                    await Message.insert(row)
                    .on_conflict(action="DO NOTHING")
                    .returning(*Message.all_columns())
                )
                if not inserted:
                    # This provider message is stored already (a retry, or a concurrent delivery
                    # that won); undo the room changes too.
                    raise _Duplicate
                message = inserted[0]
                if inbound.stored_with is not None:
                    await inbound.stored_with(message)
                conversation = await record_last_message(conversation, message)
                room.conversation = conversation
                await events.emit(*await _room_events(room), *_message_events(conversation, message))
            # --- the message is stored; what it starts (the conversation's owner read above) ---
            # A run in dialogue takes the message (hub/dialogues.py); otherwise it may start one.
            routing = await dialogues.route_inbound(account, conversation, message)
    except _Duplicate:
        existing = await _existing(account["id"], inbound.provider_message_id)
        return await _result_for_duplicate(existing)
    return InboundResult(
        conversation,
        message,
        room.created,
        duplicate=False,
        activeflow=routing.activeflow,
        dialogue=routing.delivery,
    )


def _single_statement_possible(engine, inbound: InboundMessage) -> bool:
    return (
        inbound.stored_with is None
        and isinstance(engine, PostgresEngine)
        and engine.pool is not None
        and engine.current_transaction.get() is None
    )


async def _store_in_owned_room(engine, inbound: InboundMessage, peer: Address) -> InboundResult | None:
    """The hot path on PostgreSQL (hub.inbound_pg.store_in_owned_room): a message from an address
    already in a conversation that starts no flow for it. None: not that case, nothing stored."""
    account = inbound.account
    ids = inbound_pg.Placeholders()
    stamp = now()
    room = {"customer_id": account["customer_id"], "id": ids.conversation_id, "owner_id": None}
    fields = _message_fields(account, room, {"id": ids.participant_id}, inbound, peer, stamp)
    message = {**_MESSAGE_DEFAULTS, **fields}
    summary = last_message_json(message)
    write = inbound_pg.OwnedRoomWrite(
        message,
        summary,
        # Plain (id, type, data) rows: the statement adds the room's customer and owner.
        [
            inbound_pg.OutboxEvent(uuid.uuid4(), kind, msgspec.json.encode(data).decode())
            for kind, data in _message_event_data(ids.conversation_id, message)
        ],
        ids,
        peer.type,
        peer.target,
        flow_possible=account.get("message_flow_id") is not None,
    )
    outcome, conversation, latest = await _owned_room_writer(engine.pool).submit(write)
    if outcome == "elsewhere":
        return None
    if outcome == "duplicate":
        return await _result_for_duplicate(await _existing(account["id"], inbound.provider_message_id))
    if latest:
        conversation = {**conversation, "tm_last_message": stamp, "last_message": summary}
    return InboundResult(conversation, message, conversation_created=False, duplicate=False)


# The group commit of each PostgreSQL pool (one per process, or per test's event loop).
_writers: dict[int, tuple[Any, GroupCommit]] = {}
_group_commit_max = 64


def configure_group_commit(max_batch: int) -> None:
    """HUB_INBOUND_GROUP_COMMIT_MAX: how many owned-room messages one commit may hold."""
    global _group_commit_max
    _group_commit_max = max(1, max_batch)
    for _, writer in _writers.values():
        writer.max_batch = _group_commit_max


def _owned_room_writer(pool) -> GroupCommit:
    entry = _writers.get(id(pool))
    if entry is not None and entry[0] is pool:
        return entry[1]
    for key, (other, _) in list(_writers.items()):
        if other.is_closing():
            del _writers[key]

    async def write_one(write: inbound_pg.OwnedRoomWrite):
        async with pool.acquire() as conn:
            return await inbound_pg.store_in_owned_room(conn, *write)

    async def write_many(writes: list[inbound_pg.OwnedRoomWrite]):
        async with pool.acquire() as conn:
            return await inbound_pg.store_many_in_owned_rooms(conn, writes)

    writer = GroupCommit(write_one, write_many, _group_commit_max, metrics.INBOUND_GROUP_COMMIT.observe)
    _writers[id(pool)] = (pool, writer)
    return writer


# Every column of a new message row with its default (what Message(...) fills in), so the hot path
# builds its row as a plain dict.
_MESSAGE_DEFAULTS = Message(
    **{name: uuid.UUID(int=0) for name in ("id", "customer_id", "conversation_id", "account_id")}
).to_dict()


def _message_row(
    account: dict[str, Any],
    conversation: dict[str, Any],
    participant: dict[str, Any],
    inbound: InboundMessage,
    peer: Address,
    stamp,
) -> Message:
    return Message(**_message_fields(account, conversation, participant, inbound, peer, stamp))


def _message_fields(
    account: dict[str, Any],
    conversation: dict[str, Any],
    participant: dict[str, Any],
    inbound: InboundMessage,
    peer: Address,
    stamp,
) -> dict[str, Any]:
    return dict(
        id=uuid.uuid4(),
        customer_id=account["customer_id"],
        conversation_id=conversation["id"],
        account_id=account["id"],
        participant_id=participant["id"],
        channel=account["type"],
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


async def _room_events(room: participants.Room) -> list:
    """conversation_created for a new conversation, conversation_updated (with the participants)
    when the address joined one."""
    if room.created:
        return [_created_event(room.conversation, [room.participant])]
    if room.joined:
        live = await participants.participants_of(room.conversation["id"])
        return [participants.updated_event(room.conversation, live)]
    return []


def _message_event_data(conversation_id, message: dict[str, Any]) -> list[tuple[str, Any]]:
    """(type, data) of the events of a new inbound message, in order."""
    out = message_out(message)
    return [
        (events.MESSAGE_CREATED, out),
        (events.MESSAGE_RECEIVED, MessageReceived(conversation_id=conversation_id, message=out)),
    ]


def _message_events(conversation: dict[str, Any], message: dict[str, Any]) -> list:
    customer_id, conversation_id = conversation["customer_id"], conversation["id"]
    owner_id = conversation["owner_id"]
    return [
        events.event_row(kind, customer_id, data, conversation_id, owner_id)
        for kind, data in _message_event_data(conversation_id, message)
    ]


async def open_room(
    account: dict[str, Any], self_address: Address, peer: Address, display_name: str
) -> tuple[dict[str, Any], bool]:
    """The conversation with `peer` without a message (a LINE follow), created if it is new."""
    room = await open_room_for(account, self_address, peer, display_name)
    return room.conversation, room.created


async def open_room_for(
    account: dict[str, Any], self_address: Address, peer: Address, display_name: str
) -> participants.Room:
    conversation_type = CONVERSATION_TYPE[account["type"]]
    peer = msgspec.structs.replace(peer, target_name=display_name)
    async with transaction(current_engine()):
        room = await participants.match_room(
            account, conversation_type, self_address, peer, now(), active=False
        )
        await events.emit(*await _room_events(room))
    return room


async def room_exists(account: dict[str, Any], self_target: str, peer_target: str) -> bool:
    """Whether `peer_target` is a live participant at this account (`self_target`: the account's
    own side, which no longer takes part in matching)."""
    address_type = participants.ADDRESS_TYPE_OF_ACCOUNT.get(account["type"], "tel")
    return await participants.participant_exists(account, address_type, peer_target)


def _created_event(conversation: dict[str, Any], first: list[dict[str, Any]]):
    return events.event_row(
        events.CONVERSATION_CREATED,
        conversation["customer_id"],
        conversation_out(conversation, first),
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
) -> participants.Room:
    """The conversation (and participant) of an account and a destination, created if new
    (message_send)."""
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
    elif account["type"] == "email":
        target = normalize_target("email", destination)
        if "@" not in target:
            raise BadRequest(f"destination {destination!r} is not an email address")
        peer = Address(type="email", target=target)
    else:
        peer = Address(type="line", target=destination.strip())
    # A new participant is named by its contact in room matching.
    return await open_room_for(account, self_address_of(account), peer, "")
