"""Participants: the ways to reach a conversation's peer (an address at one of our accounts), room
matching over them, their API, and the choice of the one an outgoing message goes through.

Lock order on PostgreSQL, so concurrent writers queue instead of deadlocking: a contact, then
participant rows, then the conversation row. An inbound message locks its participant (the update
of `tm_last_active`) before the conversation; a removal locks the participant, then the
conversation; a deletion updates the participants before the conversation. A new participant row
is only contended through the unique index, whoever inserts it. SQLite transactions take the
write lock up front (hub.db.transaction), so there everything is serialised anyway."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from piccolo.engine.postgres import PostgresEngine

from hub import channels, events
from hub.addresses import CHANNEL_OF_ADDRESS, Address, normalize_target
from hub.contacts import find_contact
from hub.db import current_engine, transaction
from hub.errors import BadRequest, Conflict, NotFound
from hub.models import conversation_out
from hub.pagination import fetch_page
from hub.permissions import NIL_UUID, check_participants
from hub.repo import get_scoped, now
from hub.tables import Account, Contact, Conversation, Customer, Participant
from hub.titles import auto_title

# `contact`: an address of a contact joins the contact's open conversation; `address`: every
# (account, address) opens its own.
ROUTINGS = ("contact", "address")
DEFAULT_ROUTING = "contact"
OPEN = "open"
# The address type an account type reaches.
ADDRESS_TYPE_OF_ACCOUNT = {"sms": "tel", "line": "line", "email": "email"}
# Account fields without which a channel cannot send (an account lacking one is unavailable).
REQUIRED_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "sms": ("sid", "token"),
    "line": ("token",),
    "email": ("address", "smtp_host"),
}
# Each attempt that fails lost a race to a transaction that committed meanwhile.
MAX_MATCH_ATTEMPTS = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Room:
    """Where an inbound message (or a follow) from an address at an account belongs."""

    conversation: dict[str, Any]
    participant: dict[str, Any]
    # A new conversation was opened, or the address joined an existing one as a new participant.
    created: bool = False
    joined: bool = False
    contact: dict[str, Any] | None = field(default=None)


def _is_postgres() -> bool:
    return isinstance(current_engine(), PostgresEngine)


async def _first_locked(query) -> dict[str, Any] | None:
    """The first row of a select, locked FOR UPDATE on PostgreSQL until the transaction ends."""
    if _is_postgres():
        query = query.lock_rows("UPDATE")
    return await query.first()


def _live_key(customer_id: UUID, account_id: UUID, address_type: str, target: str) -> list[Any]:
    return [
        Participant.customer_id == customer_id,
        Participant.account_id == account_id,
        Participant.address_type == address_type,
        Participant.target == target,
        Participant.tm_delete.is_null(),
        Participant.conversation_status == OPEN,
    ]


def _encode(address: Address) -> str:
    return msgspec.json.encode(address).decode()


# --- room matching ----------------------------------------------------------------------------


async def match_room(
    account: dict[str, Any],
    conversation_type: str,
    self_address: Address,
    peer: Address,
    stamp: datetime,
    active: bool = True,
) -> Room:
    """The conversation an address at `account` belongs to; call inside a write transaction.

    1. the open conversation holding the live participant (account, address);
    2. else, with `conversation_routing = contact`, the open conversation of the contact the
       address belongs to (the address joins it as a new participant) - except conversations the
       address was removed from;
    3. else a new conversation with (account, address) as its first participant.
    The unique index over live participants makes concurrent first messages meet in one
    conversation; the contact's row lock makes concurrent first messages of one contact over
    several channels meet in one conversation. `active`: an inbound message (not a follow)."""
    customer_id, account_id = account["customer_id"], account["id"]
    for _ in range(MAX_MATCH_ATTEMPTS):
        room = await _touch(customer_id, account_id, peer.type, peer.target, stamp, active)
        if room is not None:
            return room
        contact = await find_contact(customer_id, peer.type, peer.target)
        joining = None
        if contact is not None and await routing_of(customer_id) == "contact":
            # Serialises the first messages of this contact, whatever their channel.
            await _first_locked(Contact.select(Contact.id).where(Contact.id == contact["id"]))
            joining = await _open_conversation_of(customer_id, contact["id"], peer)
        known = peer.target_name or (contact["name"] if contact else "")
        peer_named = msgspec.structs.replace(peer, target_name=known)
        conversation_id = joining["id"] if joining else uuid.uuid4()
        participant = await _insert_participant(
            customer_id,
            conversation_id,
            account_id,
            peer_named,
            self_address,
            contact["id"] if contact else None,
            stamp,
            stamp if active else None,
        )
        if participant is None:
            continue  # a concurrent transaction made this participant first: match it
        if joining is not None:
            await Conversation.update({Conversation.tm_update: stamp}).where(Conversation.id == joining["id"])
            return Room({**joining, "tm_update": stamp}, participant, joined=True, contact=contact)
        title = auto_title(conversation_type, peer.target, known)
        previous = await _closed_conversation_of(customer_id, account_id, peer.type, peer.target)
        conversation = await _insert_conversation(
            conversation_id, account, conversation_type, self_address, peer_named, title, stamp, previous
        )
        return Room(conversation, participant, created=True, contact=contact)
    raise RuntimeError(f"room matching did not settle in {MAX_MATCH_ATTEMPTS} attempts")


async def _touch(
    customer_id: UUID, account_id: UUID, address_type: str, target: str, stamp: datetime, active: bool
) -> Room | None:
    """The live participant of this address, locked (and marked active), with its conversation."""
    key = _live_key(customer_id, account_id, address_type, target)
    if active:
        rows = (
            await Participant.update({Participant.tm_last_active: stamp})
            .where(*key)
            .returning(*Participant.all_columns())
        )
        participant = rows[0] if rows else None
    else:
        participant = await _first_locked(Participant.select().where(*key))
    if participant is None:
        return None
    conversation = await _first_locked(
        Conversation.select().where(Conversation.id == participant["conversation_id"])
    )
    return Room(conversation, participant)


_CONTACT_CONVERSATIONS = """
SELECT p.conversation_id FROM participants p
JOIN contact_addresses ca
  ON ca.customer_id = p.customer_id AND ca.type = p.address_type AND ca.target = p.target
WHERE ca.contact_id = {} AND p.customer_id = {} AND p.tm_delete IS NULL AND p.conversation_status = 'open'
  AND NOT EXISTS (
    SELECT 1 FROM participants r
    WHERE r.conversation_id = p.conversation_id AND r.address_type = {} AND r.target = {}
      AND r.tm_delete IS NOT NULL)
ORDER BY p.tm_last_active DESC NULLS LAST, p.tm_create DESC
LIMIT 5
"""


async def _open_conversation_of(customer_id: UUID, contact_id: UUID, peer: Address) -> dict[str, Any] | None:
    """The contact's most recently active open conversation, locked; None if it has none. One
    the address was removed from does not count: removing it was deliberate."""
    rows = await Participant.raw(_CONTACT_CONVERSATIONS, contact_id, customer_id, peer.type, peer.target)
    for row in rows:
        conversation = await _first_locked(
            Conversation.select().where(
                Conversation.id == UUID(str(row["conversation_id"])), Conversation.tm_delete.is_null()
            )
        )
        if conversation is not None:
            return conversation
    return None


async def _insert_participant(
    customer_id: UUID,
    conversation_id: UUID,
    account_id: UUID,
    peer: Address,
    self_address: Address,
    contact_id: UUID | None,
    stamp: datetime,
    last_active: datetime | None,
    participant_id: UUID | None = None,
) -> dict[str, Any] | None:
    """Inserts a live participant; None when that (account, address) is live in an open
    conversation already (the unique index; a concurrent insert is waited for)."""
    rows = (
        await Participant.insert(
            Participant(
                id=participant_id or uuid.uuid4(),
                customer_id=customer_id,
                conversation_id=conversation_id,
                account_id=account_id,
                address_type=peer.type,
                target=peer.target,
                target_name=peer.target_name,
                address=_encode(peer),
                self_address=_encode(self_address),
                contact_id=contact_id,
                conversation_status=OPEN,
                tm_last_active=last_active,
                tm_create=stamp,
                tm_update=stamp,
            )
        )
        .on_conflict(action="DO NOTHING")
        .returning(*Participant.all_columns())
    )
    return rows[0] if rows else None


async def _closed_conversation_of(
    customer_id: UUID, account_id: UUID, address_type: str, target: str
) -> UUID | None:
    """The latest closed conversation this address took part in at the account (the one a new
    conversation continues: `previous_conversation_id`)."""
    row = (
        await Participant.select(Participant.conversation_id)
        .where(
            Participant.customer_id == customer_id,
            Participant.account_id == account_id,
            Participant.address_type == address_type,
            Participant.target == target,
            Participant.tm_delete.is_null(),
            Participant.conversation_status == "closed",
        )
        .order_by(Participant.tm_create, ascending=False)
        .first()
    )
    return row["conversation_id"] if row else None


async def _insert_conversation(
    conversation_id: UUID,
    account: dict[str, Any],
    conversation_type: str,
    self_address: Address,
    peer: Address,
    title: tuple[str, str],
    stamp: datetime,
    previous_conversation_id: UUID | None = None,
) -> dict[str, Any]:
    rows = await Conversation.insert(
        Conversation(
            id=conversation_id,
            customer_id=account["customer_id"],
            account_id=account["id"],
            type=conversation_type,
            name=title[0],
            detail=title[1],
            owner_type="",
            owner_id=NIL_UUID,
            self_target=self_address.target,
            peer_target=peer.target,
            self_address=_encode(self_address),
            peer_address=_encode(peer),
            previous_conversation_id=previous_conversation_id,
            tm_create=stamp,
            tm_update=stamp,
        )
    ).returning(*Conversation.all_columns())
    return rows[0]


async def routing_of(customer_id: UUID) -> str:
    row = await Customer.select(Customer.conversation_routing).where(Customer.id == customer_id).first()
    return (row or {}).get("conversation_routing") or DEFAULT_ROUTING


async def participant_exists(account: dict[str, Any], address_type: str, target: str) -> bool:
    return await Participant.exists().where(
        *_live_key(account["customer_id"], account["id"], address_type, target)
    )


# --- reading ----------------------------------------------------------------------------------


async def live_participants(conversation_ids: list[UUID]) -> dict[str, list[dict[str, Any]]]:
    """The live participants of each conversation (by str(id)), first participant first."""
    found: dict[str, list[dict[str, Any]]] = {str(i): [] for i in conversation_ids}
    if conversation_ids:
        rows = (
            await Participant.select()
            .where(Participant.conversation_id.is_in(list(conversation_ids)), Participant.tm_delete.is_null())
            .order_by(Participant.tm_create, Participant.id)
        )
        for row in rows:
            found[str(row["conversation_id"])].append(row)
    return found


async def participants_of(conversation_id: UUID) -> list[dict[str, Any]]:
    return (await live_participants([conversation_id]))[str(conversation_id)]


async def conversation_with_participants(row: dict[str, Any]):
    """The conversation's public form with its live participants."""
    return conversation_out(row, await participants_of(row["id"]))


async def list_participants(customer_id: UUID, conversation_id: UUID, page_size: int, page_token: str):
    await get_scoped(Conversation, customer_id, conversation_id)
    return await fetch_page(
        Participant,
        [Participant.conversation_id == conversation_id, Participant.tm_delete.is_null()],
        page_size,
        page_token,
    )


def variables(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Flow variables `conversation.participants.<n>.*` (n = 0 is the first participant)."""
    out = {"conversation.participants.count": str(len(rows))}
    for n, row in enumerate(rows):
        prefix = f"conversation.participants.{n}"
        out.update(
            {
                f"{prefix}.id": str(row["id"]),
                f"{prefix}.account_id": str(row["account_id"]),
                f"{prefix}.channel": CHANNEL_OF_ADDRESS.get(row["address_type"], row["address_type"]),
                f"{prefix}.address.type": row["address_type"],
                f"{prefix}.address.target": row["target"],
                f"{prefix}.address.target_name": row["target_name"],
                f"{prefix}.contact_id": str(row["contact_id"]) if row["contact_id"] else "",
            }
        )
    return out


# --- changes through the API ------------------------------------------------------------------


def normalized_address(address: Address) -> Address:
    """The address with its target normalised; BadRequest when it is not one."""
    target = normalize_target(address.type, address.target)
    if address.type == "tel" and not target:
        raise BadRequest(f"address.target {address.target[:64]!r} is not a phone number")
    if address.type == "email" and not _EMAIL.match(target):
        raise BadRequest(f"address.target {address.target[:64]!r} is not an email address")
    if address.type == "line" and (not target or any(ch.isspace() for ch in target)):
        raise BadRequest("address.target must be a LINE user, group or room id")
    if address.type not in CHANNEL_OF_ADDRESS:
        raise BadRequest(f"address.type must be one of {', '.join(CHANNEL_OF_ADDRESS)}")
    return msgspec.structs.replace(address, target=target)


def updated_event(conversation: dict[str, Any], participants: list[dict[str, Any]]):
    return events.event_row(
        events.CONVERSATION_UPDATED,
        conversation["customer_id"],
        conversation_out(conversation, participants),
        conversation["id"],
        conversation["owner_id"],
    )


async def _account_for(customer_id: UUID, account_id: UUID, address_type: str) -> dict[str, Any]:
    account = (
        await Account.select()
        .where(Account.id == account_id, Account.customer_id == customer_id, Account.tm_delete.is_null())
        .first()
    )
    if account is None:
        # Unknown and another customer's account answer alike.
        raise BadRequest("account_id does not reference a live account of this customer")
    reaches = ADDRESS_TYPE_OF_ACCOUNT.get(account["type"])
    if reaches != address_type:
        raise BadRequest(f"a {account['type']} account reaches {reaches} addresses, not {address_type}")
    return account


async def add_participant(
    customer_id: UUID,
    conversation_id: UUID,
    agent_id: UUID,
    permission: int,
    account_id: UUID,
    address: Address,
) -> dict[str, Any]:
    """Adds (account, address) to the conversation, in one transaction."""
    async with transaction(current_engine()):
        return await _add(customer_id, conversation_id, agent_id, permission, account_id, address)


async def _add(
    customer_id: UUID,
    conversation_id: UUID,
    agent_id: UUID,
    permission: int,
    account_id: UUID,
    address: Address,
) -> dict[str, Any]:
    # Locked first: changes of one conversation's participants queue here.
    conversation = await _first_locked(
        Conversation.select().where(
            Conversation.id == conversation_id,
            Conversation.customer_id == customer_id,
            Conversation.tm_delete.is_null(),
        )
    )
    if conversation is None:
        raise NotFound(f"conversation {conversation_id} not found")
    check_participants(agent_id, permission, conversation["owner_id"])
    address = normalized_address(address)
    account = await _account_for(customer_id, account_id, address.type)
    contact = await find_contact(customer_id, address.type, address.target)
    if not address.target_name and contact:
        address = msgspec.structs.replace(address, target_name=contact["name"])
    stamp = now()
    from hub.inbound import self_address_of  # inbound imports this module

    participant = await _insert_participant(
        customer_id,
        conversation_id,
        account["id"],
        address,
        self_address_of(account),
        contact["id"] if contact else None,
        stamp,
        None,
    )
    if participant is None:
        held = (
            await Participant.select(Participant.conversation_id)
            .where(*_live_key(customer_id, account["id"], address.type, address.target))
            .first()
        )
        if held and held["conversation_id"] == conversation_id:
            raise Conflict("this account and address are a participant of this conversation already")
        raise Conflict("this account and address are a live participant of another open conversation")
    await _changed(conversation, stamp)
    return participant


async def remove_participant(
    customer_id: UUID, conversation_id: UUID, participant_id: UUID, agent_id: UUID, permission: int
) -> dict[str, Any]:
    """Removes a live participant (never the last one), in one transaction."""
    async with transaction(current_engine()):
        return await _remove(customer_id, conversation_id, participant_id, agent_id, permission)


async def _remove(
    customer_id: UUID, conversation_id: UUID, participant_id: UUID, agent_id: UUID, permission: int
) -> dict[str, Any]:
    conversation = await get_scoped(Conversation, customer_id, conversation_id)
    check_participants(agent_id, permission, conversation["owner_id"])
    participant = await _first_locked(
        Participant.select().where(
            Participant.id == participant_id,
            Participant.conversation_id == conversation_id,
            Participant.tm_delete.is_null(),
        )
    )
    if participant is None:
        raise NotFound(f"participant {participant_id} not found")
    conversation = await _first_locked(Conversation.select().where(Conversation.id == conversation_id))
    check_participants(agent_id, permission, conversation["owner_id"])
    live = await Participant.count().where(
        Participant.conversation_id == conversation_id, Participant.tm_delete.is_null()
    )
    if live <= 1:
        raise Conflict("the last participant of a conversation cannot be removed")
    stamp = now()
    [removed] = (
        await Participant.update({Participant.tm_delete: stamp, Participant.tm_update: stamp})
        .where(Participant.id == participant_id)
        .returning(*Participant.all_columns())
    )
    await _changed(conversation, stamp)
    return removed


async def _changed(conversation: dict[str, Any], stamp: datetime) -> None:
    await Conversation.update({Conversation.tm_update: stamp}).where(Conversation.id == conversation["id"])
    row = {**conversation, "tm_update": stamp}
    await events.emit(updated_event(row, await participants_of(row["id"])))


async def remove_all(conversation_id: UUID, stamp: datetime) -> None:
    """Ends every live participant of a conversation being deleted (before its row changes)."""
    await Participant.update({Participant.tm_delete: stamp, Participant.tm_update: stamp}).where(
        Participant.conversation_id == conversation_id, Participant.tm_delete.is_null()
    )


# --- outbound channel selection ---------------------------------------------------------------


def account_problem(account: dict[str, Any] | None) -> str:
    """Why an account cannot send at all ("" when it can)."""
    if account is None or account.get("tm_delete") is not None:
        return "its account was deleted"
    missing = [f for f in REQUIRED_CREDENTIALS.get(account["type"], ()) if not account.get(f)]
    if missing:
        return f"its account has no credentials ({', '.join(missing)} unset)"
    return ""


def _by_activity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Latest inbound first; participants never heard from after them, first participant first."""
    active = sorted((r for r in rows if r["tm_last_active"]), key=lambda r: r["tm_last_active"], reverse=True)
    return active + [r for r in rows if not r["tm_last_active"]]


def _describe(row: dict[str, Any]) -> str:
    channel = CHANNEL_OF_ADDRESS.get(row["address_type"], row["address_type"])
    return f"participant {row['id']} ({channel} {row['target'] or 'unknown'})"


async def choose(
    conversation_id: UUID, text: str, medias: list[Any], participant_id: UUID | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The participant (and its account) an outgoing message goes through: the one named, else
    the most recently active one that can carry it. BadRequest says why none can."""
    rows = _by_activity(await participants_of(conversation_id))
    if participant_id is not None:
        rows = [r for r in rows if r["id"] == participant_id]
        if not rows:
            raise BadRequest(f"participant_id {participant_id} is not a live participant here")
    if not rows:
        raise BadRequest("this conversation has no live participant to send to")
    accounts = {
        a["id"]: a for a in await Account.select().where(Account.id.is_in([r["account_id"] for r in rows]))
    }
    problems = []
    for row in rows:
        account = accounts.get(row["account_id"])
        problem = account_problem(account)
        if not problem and (caps := channels.capabilities(account["type"])):
            problem = channels.outgoing_problem(caps, text, medias)
        if not problem:
            return row, account
        problems.append(f"{_describe(row)}: {problem}")
    if participant_id is not None:
        raise BadRequest(f"this participant cannot carry the message: {problems[0]}")
    raise BadRequest("no participant can carry this message: " + "; ".join(problems))
