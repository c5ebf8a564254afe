"""Public representations of hub objects, shared by API responses and event payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from hub.addresses import E164_PATTERN, Address

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
    # Set when the endpoint answered 410 Gone: nothing is sent to it until the next PUT.
    webhook_disabled_at: datetime | None = None
    webhook_disabled_reason: str = ""
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


class ConversationOut(msgspec.Struct, kw_only=True):
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
    tm_create: datetime | None
    tm_update: datetime | None
    tm_delete: datetime | None = None


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


def conversation_out(row: dict[str, Any]) -> ConversationOut:
    data = dict(row)
    data["self"] = _json(data.pop("self_address", None), {})
    data["peer"] = _json(data.pop("peer_address", None), {})
    return msgspec.convert(data, ConversationOut, strict=False)


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
