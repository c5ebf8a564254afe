"""Flows: storage of user-defined action lists, and the account references to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec

from hub import netguard
from hub.actions import ActionIn, validate_actions
from hub.db import current_engine, transaction
from hub.errors import BadRequest
from hub.pagination import fetch_page
from hub.repo import get_scoped, now, soft_delete
from hub.settings import Settings
from hub.strict import refuse_nul
from hub.tables import Account, Flow, FlowVersion

HTTP_ACTIONS = ("webhook_send", "fetch")


@dataclass(frozen=True)
class FlowRules:
    """What a stored flow may contain beyond its actions' own validation (from the settings)."""

    allow_private_targets: bool = False
    max_bytes: int = 256 * 1024

    @classmethod
    def of(cls, settings: Settings) -> FlowRules:
        return cls(settings.webhook_allow_private, settings.flow_max_bytes)


def encode_actions(actions: list[ActionIn], rules: FlowRules) -> tuple[str, list[dict[str, Any]]]:
    """The validated actions as stored (JSON) and as a list; 400 naming the action otherwise."""
    normalised = validate_actions(actions)
    for action in normalised:
        refuse_nul(action, f"action {action['id']!r}")
        if action["type"] in HTTP_ACTIONS:
            try:
                netguard.check_literal_target(
                    action["option"]["url"], rules.allow_private_targets, template=True
                )
            except netguard.TargetRefused as exc:
                raise BadRequest(f"action {action['id']!r} ({action['type']}): url refused: {exc}") from exc
    encoded = msgspec.json.encode(normalised)
    if len(encoded) > rules.max_bytes:
        raise BadRequest(
            f"the flow's actions take {len(encoded)} bytes encoded; at most {rules.max_bytes} "
            f"({rules.max_bytes / 1024:.0f} KiB) are allowed (HUB_FLOW_MAX_BYTES)"
        )
    return encoded.decode(), normalised


async def check_accounts(customer_id: UUID, actions: list[dict[str, Any]]) -> None:
    """message_send actions must name live accounts of the customer (one query for all)."""
    wanted = {a["id"]: UUID(a["option"]["account_id"]) for a in actions if a["type"] == "message_send"}
    if not wanted:
        return
    live = await (
        Account.select(Account.id)
        .where(
            Account.id.is_in(list(set(wanted.values()))),
            Account.customer_id == customer_id,
            Account.tm_delete.is_null(),
        )
        .output(as_list=True)
    )
    live_ids = {str(i) for i in live}
    for action_id, account_id in wanted.items():
        if str(account_id) not in live_ids:
            raise BadRequest(
                f"action {action_id!r} (message_send): account_id is not an account of this customer"
            )


def flow_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "actions": msgspec.json.decode(row["actions"])}


async def create_flow(
    customer_id: UUID, name: str, detail: str, actions: list[ActionIn], rules: FlowRules = FlowRules()
) -> dict[str, Any]:
    refuse_nul({"name": name, "detail": detail})
    encoded, normalised = encode_actions(actions, rules)
    await check_accounts(customer_id, normalised)
    flow = Flow(
        id=uuid.uuid4(), customer_id=customer_id, name=name, detail=detail, actions=encoded, version=1
    )
    async with transaction(current_engine()):
        await Flow.insert(flow)
        await FlowVersion.insert(FlowVersion(flow_id=flow.id, version=1, actions=encoded))
    return flow_view(await get_scoped(Flow, customer_id, flow.id))


async def get_flow(customer_id: UUID, flow_id: UUID) -> dict[str, Any]:
    return flow_view(await get_scoped(Flow, customer_id, flow_id))


async def list_flows(customer_id: UUID, page_size: int, page_token: str):
    rows, token = await fetch_page(
        Flow, [Flow.customer_id == customer_id, Flow.tm_delete.is_null()], page_size, page_token
    )
    return [flow_view(r) for r in rows], token


async def update_flow(
    customer_id: UUID, flow_id: UUID, values: dict[str, Any], rules: FlowRules = FlowRules()
) -> dict[str, Any]:
    await get_scoped(Flow, customer_id, flow_id)
    refuse_nul({k: v for k, v in values.items() if k in ("name", "detail")})
    changes: dict[Any, Any] = {}
    if "name" in values:
        changes[Flow.name] = values["name"]
    if "detail" in values:
        changes[Flow.detail] = values["detail"]
    encoded = None
    if "actions" in values:
        encoded, normalised = encode_actions(values["actions"], rules)
        await check_accounts(customer_id, normalised)
        changes[Flow.actions] = encoded
        changes[Flow.version] = Flow.version + 1
    if changes:
        changes[Flow.tm_update] = now()
        # The update locks the row, so concurrent edits get consecutive versions.
        async with transaction(current_engine()):
            await Flow.update(changes).where(Flow.id == flow_id)
            if encoded is not None:
                version = await Flow.select(Flow.version).where(Flow.id == flow_id).first()
                await FlowVersion.insert(
                    FlowVersion(flow_id=flow_id, version=version["version"], actions=encoded)
                )
    return await get_flow(customer_id, flow_id)


async def flow_version_actions(flow_id: UUID, version: int) -> str | None:
    """The stored (JSON) action list of one version of a flow, None when there is no such version."""
    row = await (
        FlowVersion.select(FlowVersion.actions)
        .where(FlowVersion.flow_id == flow_id, FlowVersion.version == version)
        .first()
    )
    return row["actions"] if row else None


async def delete_flow(customer_id: UUID, flow_id: UUID) -> dict[str, Any]:
    return flow_view(await soft_delete(Flow, customer_id, flow_id))


async def live_flow(customer_id: UUID, flow_id: UUID | None) -> dict[str, Any] | None:
    if flow_id is None:
        return None
    return (
        await Flow.select()
        .where(Flow.id == flow_id, Flow.customer_id == customer_id, Flow.tm_delete.is_null())
        .first()
    )


async def check_flow_reference(customer_id: UUID, flow_id: UUID | None) -> None:
    """An account's message_flow_id must name a live flow of the same customer."""
    if flow_id is not None and await live_flow(customer_id, flow_id) is None:
        raise BadRequest("message_flow_id is not a flow of this customer")


async def find_flow(customer_id: UUID, flow_id: str | None, name: str) -> dict[str, Any] | None:
    """A live flow of the customer by id (when given) or else by name."""
    query = Flow.select().where(Flow.customer_id == customer_id, Flow.tm_delete.is_null())
    if flow_id:
        try:
            return await query.where(Flow.id == UUID(str(flow_id))).first()
        except ValueError as exc:
            raise BadRequest(f"id {flow_id!r} is not a UUID") from exc
    return await query.where(Flow.name == name).order_by(Flow.tm_create).first()
