"""Public representations of hub objects, shared by API responses and event payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from hub.addresses import CHANNEL_OF_ADDRESS, E164_PATTERN, Address

# The stored number of an sms account (E.164), "" for other account types.
AccountNumber = Annotated[str, msgspec.Meta(pattern=f"^({E164_PATTERN[1:-1]})?$")]
PermissionBits = Annotated[
    int, msgspec.Meta(description="0 plain agent, 32 (0x20) admin, 64 (0x40) manager, 96 both")
]


class Media(msgspec.Struct, kw_only=True):
    type: str = ""
    url: str = ""


class CustomerOut(msgspec.Struct, kw_only=True):
    id: UUID
    name: str
    webhook_uri: str
    webhook_method: str
    # `contact`: an address of a contact joins the contact's open conversation; `address`: each
    # (account, address) has its own conversation.
    conversation_routing: str = "contact"
    # Set when the endpoint answered 410 Gone: nothing is sent to it until the next PUT.
    webhook_disabled_at: datetime | None = None
    webhook_disabled_reason: str = ""
    # Open conversations quiet (no message either way) for this many seconds are closed; 0 = never.
    inactivity_close_s: int = 0
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


class WebhookDeliveryOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    # Also the `webhook-id` header: stable across retries and replays.
    event_id: UUID
    event_type: str
    conversation_id: UUID | None
    status: str
    attempts: int
    # The last answer's HTTP status; null before the first attempt and when none came (timeout).
    last_status_code: int | None
    last_error: str
    # When the next attempt is due; null once delivered or failed.
    next_attempt_at: datetime | None
    tm_delivered: datetime | None
    tm_create: datetime | None
    tm_update: datetime | None


class AgentOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    username: str
    name: str
    detail: str
    permission: PermissionBits
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


class ContactAddressOut(msgspec.Struct, kw_only=True):
    type: str
    target: str


class ContactOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    name: str
    detail: str
    addresses: list[ContactAddressOut]
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


class AccountOut(msgspec.Struct, kw_only=True):
    """`secret`, `token` and `smtp_password` are write-only and deliberately absent."""

    id: UUID
    customer_id: UUID
    type: str
    name: str
    detail: str
    number: AccountNumber
    sid: str
    message_flow_id: UUID | None
    # Email accounts: the mailbox and its SMTP relay ("" and 0 for other types).
    address: str = ""
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_security: str = ""
    smtp_username: str = ""
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


# gc=False: never part of a reference cycle (scalars only), so not tracked by the garbage
# collector; a list page makes a hundred of each.
class LastMessage(msgspec.Struct, kw_only=True, gc=False):
    id: UUID
    direction: str
    # The first 200 characters.
    text: str
    tm_create: datetime | None


class ParticipantOut(msgspec.Struct, kw_only=True):
    """One way to reach the conversation's peer: an address at one of the customer's accounts."""

    id: UUID
    conversation_id: UUID
    account_id: UUID
    # sms | line | email: the channel the address is reached through.
    channel: str
    address: Address
    # The contact that held the address when the participant was made.
    contact_id: UUID | None = None
    # The latest inbound message from it; null before the first one.
    tm_last_active: datetime | None = None
    tm_create: datetime | None
    tm_update: datetime | None = None
    tm_delete: datetime | None = None


# gc=False as LastMessage: nothing it holds refers back to it.
class ConversationOut(msgspec.Struct, kw_only=True, gc=False):
    id: UUID
    customer_id: UUID
    account_id: UUID
    type: str
    name: str
    detail: str
    owner_type: str
    owner_id: UUID
    self_: Address = msgspec.field(name="self")
    peer: Address
    tags: list[str] = []
    status: str = "open"
    tm_closed: datetime | None = None
    closed_reason: str = ""
    closed_note: str = ""
    previous_conversation_id: UUID | None = None
    tm_last_message: datetime | None = None
    last_message: LastMessage | None = None
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None
    # The live participants, first one first: on single conversations and conversation events,
    # absent from lists. `account_id`, `type`, `self` and `peer` above are the first participant's.
    participants: list[ParticipantOut] | msgspec.UnsetType = msgspec.UNSET


class MessageOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    conversation_id: UUID
    direction: str
    status: str
    source: Address
    destination: Address
    text: str
    medias: list[Media]
    provider_message_id: str
    # Every provider id (a LINE message of more than 5 objects goes out in several pushes).
    provider_message_ids: list[str] = []
    activeflow_id: UUID | None
    # Why a message failed (provider error), "" otherwise.
    reason: str = ""
    # What the provider reported last: queued, sent, delivered, undelivered, failed ("" = nothing).
    delivery_status: str = ""
    tm_delivered: datetime | None = None
    # The provider's raw message type (LINE: text, image, sticker, location, ...); "" = plain text.
    content_type: str = ""
    # The participant it came from or went to, its account and channel (sms, line, email).
    participant_id: UUID | None = None
    account_id: UUID | None = None
    channel: str = ""
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


class ActionOut(msgspec.Struct, kw_only=True):
    id: str
    type: str
    option: dict[str, Any]
    next_id: str | None = None


class FlowOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    name: str
    detail: str
    actions: list[ActionOut]
    # Grows by one with each change of the actions; runs keep the version they started with.
    version: int = 1
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


class FlowVersionOut(msgspec.Struct, kw_only=True):
    """One stored action list of a flow: a run executes the version it started with."""

    flow_id: UUID
    version: int
    actions: list[ActionOut]
    tm_create: datetime | None


def flow_version_out(row: dict[str, Any]) -> FlowVersionOut:
    return msgspec.convert(row, FlowVersionOut, strict=False)
class DialogueMessageOut(msgspec.Struct, kw_only=True):
    """An inbound message routed to a run in dialogue: `routed` (no wait took it yet), `consumed`
    or `unconsumed` (the run ended first)."""

    message_id: UUID
    position: int
    state: str


class ActiveflowOut(msgspec.Struct, kw_only=True):
    id: UUID
    customer_id: UUID
    flow_id: UUID
    flow_name: str
    # The version of the flow's actions the run executes (0: from before flow versions).
    flow_version: int = 0
    conversation_id: UUID
    account_id: UUID
    message_id: UUID | None
    workflow_id: str
    status: str
    current_action_id: str
    executed_actions: list[str]
    variables: dict[str, str]
    reason: str
    tm_create: datetime | None
    tm_update: datetime | None
    tm_end: datetime | None = None
    # The activeflow whose `flow_start` started this run (a sub-flow), null otherwise.
    parent_id: UUID | None = None
    # Dialogue (wait_for_reply): whether the run takes its conversation's messages, whether it is
    # waiting now (a running run only), and its inbox in commit order (GET of one run only).
    in_dialogue: bool = False
    waiting: bool = False
    inbox: list[DialogueMessageOut] = []


def flow_out(row: dict[str, Any]) -> FlowOut:
    return msgspec.convert({**row, "actions": _json(row.get("actions"), [])}, FlowOut, strict=False)


def activeflow_out(row: dict[str, Any]) -> ActiveflowOut:
    data = {
        **row,
        "executed_actions": _json(row.get("executed_actions"), []),
        "variables": _json(row.get("variables"), {}),
    }
    return msgspec.convert(data, ActiveflowOut, strict=False)


class MessageReceived(msgspec.Struct, kw_only=True):
    conversation_id: UUID
    message: MessageOut


def _json(value: Any, default: Any) -> Any:
    if value in (None, ""):
        return default
    if isinstance(value, (str, bytes)):
        return msgspec.json.decode(value)
    return value


def conversation_out(
    row: dict[str, Any], participants: list[dict[str, Any]] | None = None
) -> ConversationOut:
    """The public form of a conversation row; with `participants` (rows), they are carried too."""
    data = dict(row)
    data["self"] = _json(data.pop("self_address", None), {})
    data["peer"] = _json(data.pop("peer_address", None), {})
    data["tags"] = _json(data.get("tags"), [])
    data["last_message"] = _json(data.get("last_message"), None)
    out = msgspec.convert(data, ConversationOut, strict=False)
    if participants is not None:
        out.participants = [participant_out(p) for p in participants]
    return out


_address_json = msgspec.json.Decoder(Address, strict=False)
_tags_json = msgspec.json.Decoder(list[str], strict=False)
_last_message_json = msgspec.json.Decoder(LastMessage | None, strict=False)


def listed_conversation_out(row: Any) -> ConversationOut:
    """`conversation_out(row)` without participants, built field by field from a row (a dict or
    an asyncpg Record of every conversations column): the list's hundred rows skip the dict copy
    and the generic conversion. tests/integration/test_list_fast_path.py holds the two equal."""
    self_address, peer_address, tags, last_message = (
        row["self_address"],
        row["peer_address"],
        row["tags"],
        row["last_message"],
    )
    return ConversationOut(
        id=row["id"],
        customer_id=row["customer_id"],
        account_id=row["account_id"],
        type=row["type"],
        name=row["name"],
        detail=row["detail"],
        owner_type=row["owner_type"],
        owner_id=row["owner_id"],
        self_=_address_json.decode(self_address) if self_address else Address(),
        peer=_address_json.decode(peer_address) if peer_address else Address(),
        tags=_tags_json.decode(tags) if tags else [],
        status=row["status"],
        tm_closed=row["tm_closed"],
        closed_reason=row["closed_reason"],
        closed_note=row["closed_note"],
        previous_conversation_id=row["previous_conversation_id"],
        tm_last_message=row["tm_last_message"],
        last_message=_last_message_json.decode(last_message) if last_message else None,
        tm_create=row["tm_create"],
        tm_update=row["tm_update"],
        tm_delete=row["tm_delete"],
    )


def participant_out(row: dict[str, Any]) -> ParticipantOut:
    address = _json(row.get("address"), {})
    address.update(type=row["address_type"], target=row["target"], target_name=row["target_name"])
    data = {**row, "channel": CHANNEL_OF_ADDRESS.get(row["address_type"], ""), "address": address}
    return msgspec.convert(data, ParticipantOut, strict=False)


LAST_MESSAGE_TEXT = 200


def last_message_json(message: dict[str, Any]) -> str:
    """The `last_message` column for `message` (text cut at 200 characters)."""
    return encode_json(
        LastMessage(
            id=message["id"],
            direction=message["direction"],
            text=(message.get("text") or "")[:LAST_MESSAGE_TEXT],
            tm_create=message["tm_create"],
        )
    )


def message_out(row: dict[str, Any]) -> MessageOut:
    data = dict(row)
    data["source"] = _json(data.get("source"), {})
    data["destination"] = _json(data.get("destination"), {})
    data["medias"] = _json(data.get("medias"), [])
    data["provider_message_id"] = data.get("provider_message_id") or ""
    data["provider_message_ids"] = _json(data.get("provider_message_ids"), [])
    return msgspec.convert(data, MessageOut, strict=False)


def to_builtins(obj: msgspec.Struct) -> Any:
    return msgspec.to_builtins(obj)


def encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()
