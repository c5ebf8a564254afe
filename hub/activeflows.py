"""Activeflows: runs of a flow. Created with their trigger, finished by the workflow, listed by API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec

from hub import participants
from hub.actions import parse_stored
from hub.conversations import get_conversation
from hub.errors import BadRequest, Conflict, NotFound
from hub.flows import flow_version_actions, live_flow
from hub.pagination import fetch_page
from hub.permissions import NIL_UUID
from hub.repo import get_scoped, now
from hub.tables import Activeflow

STATUSES = ("running", "ended", "failed", "stopped")


def workflow_id_for_message(message_id: UUID) -> str:
    return f"activeflow-{message_id}"


def initial_variables(
    conversation: dict[str, Any],
    message: dict[str, Any] | None,
    flow_id: UUID,
    activeflow_id: UUID,
    live_participants: list[dict[str, Any]] | None = None,
) -> dict[str, str]:
    me = msgspec.json.decode(conversation["self_address"] or "{}")
    peer = msgspec.json.decode(conversation["peer_address"] or "{}")
    return {
        "conversation.id": str(conversation["id"]),
        "conversation.self.target": me.get("target", ""),
        "conversation.peer.target": peer.get("target", ""),
        "conversation.peer.name": peer.get("target_name", "") or peer.get("name", ""),
        # open | closed; a flow's conversation_close sets it to closed for the steps after it.
        "conversation.status": conversation.get("status") or "open",
        "message.id": str(message["id"]) if message else "",
        "message.text": message["text"] if message else "",
        "message.direction": message["direction"] if message else "",
        # The channel and participant the message came through (sms, line, email).
        "message.channel": (message.get("channel") or "") if message else "",
        "message.participant_id": str(message.get("participant_id") or "") if message else "",
        # The account the message came through; the conversation's first one without a message.
        "account.id": str(message["account_id"] if message else conversation["account_id"]),
        "flow.id": str(flow_id),
        "activeflow.id": str(activeflow_id),
        **participants.variables(live_participants or []),
    }


async def create_for_message(
    account: dict[str, Any], conversation: dict[str, Any], message: dict[str, Any]
) -> dict[str, Any] | None:
    """The activeflow an inbound message starts, if any; call inside the inbound transaction.

    None when the conversation is owned by an agent or the account has no (live) flow."""
    if str(conversation["owner_id"]) != str(NIL_UUID):
        return None
    flow = await live_flow(account["customer_id"], account["message_flow_id"])
    if flow is None:
        return None
    activeflow_id = uuid.uuid4()
    row = Activeflow(
        id=activeflow_id,
        customer_id=account["customer_id"],
        flow_id=flow["id"],
        flow_name=flow["name"],
        conversation_id=conversation["id"],
        account_id=account["id"],
        message_id=message["id"],
        workflow_id=workflow_id_for_message(message["id"]),
        # The run reads its actions from flow_versions, not from a copy in its row.
        flow_version=flow["version"],
        status="running",
        started=False,
        variables=msgspec.json.encode(
            initial_variables(
                conversation,
                message,
                flow["id"],
                activeflow_id,
                await participants.participants_of(conversation["id"]),
            )
        ).decode(),
    )
    await Activeflow.insert(row)
    return await Activeflow.select().where(Activeflow.id == activeflow_id).first()


async def unstarted_for_message(message_id: UUID) -> dict[str, Any] | None:
    return (
        await Activeflow.select()
        .where(
            Activeflow.message_id == message_id, Activeflow.started.eq(False), Activeflow.status == "running"
        )
        .first()
    )


async def mark_started(activeflow_id: UUID) -> None:
    await Activeflow.update({Activeflow.started: True}).where(Activeflow.id == activeflow_id)


async def unstarted(older_than_s: float, limit: int = 500) -> list[dict[str, Any]]:
    """Runs whose workflow start was never confirmed (a crash or Temporal outage after the commit).
    Runs whose starts failed before come last, so they cannot crowd out the others."""
    return (
        await Activeflow.select()
        .where(
            Activeflow.started.eq(False),
            Activeflow.status == "running",
            Activeflow.tm_create < now() - timedelta(seconds=older_than_s),
        )
        .order_by(Activeflow.start_attempts, Activeflow.tm_create)
        .limit(limit)
    )


async def start_failed(activeflow_id: UUID, error: str, max_attempts: int) -> bool:
    """Counts a failed workflow start by recovery; the run is `failed` (with the error) once it
    failed `max_attempts` times. True when that happened now."""
    pending = (Activeflow.id == activeflow_id, Activeflow.started.eq(False), Activeflow.status == "running")
    await Activeflow.update(
        {Activeflow.start_attempts: Activeflow.start_attempts + 1, Activeflow.tm_update: now()}
    ).where(*pending)
    stamp = now()
    given_up = await Activeflow.update(
        {
            Activeflow.status: "failed",
            Activeflow.reason: f"the workflow could not be started ({max_attempts} attempts): {error}"[:2000],
            Activeflow.tm_update: stamp,
            Activeflow.tm_end: stamp,
        }
    ).where(*pending, Activeflow.start_attempts >= max_attempts).returning(Activeflow.id)
    return bool(given_up)


async def run_plan(activeflow_id: UUID, flow_version: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's row and its actions, validated (version 0: the copy in the row, from before flow
    versions). NotFound / BadRequest say why the run cannot execute."""
    row = await Activeflow.select().where(Activeflow.id == activeflow_id).first()
    if row is None:
        raise NotFound(f"activeflow {activeflow_id} does not exist")
    raw = row["actions"]
    if flow_version:
        raw = await flow_version_actions(row["flow_id"], flow_version)
        if raw is None:
            raise NotFound(f"version {flow_version} of flow {row['flow_id']} is not stored")
    return row, parse_stored(raw)


def stored_variables(row: dict[str, Any]) -> dict[str, str]:
    try:
        return msgspec.json.decode(row["variables"] or "{}", type=dict[str, str])
    except msgspec.MsgspecError as exc:
        raise BadRequest(f"stored variables are malformed: {exc}") from exc


async def finish(
    activeflow_id: UUID,
    status: str,
    executed: list[str],
    variables: dict[str, str],
    current_action_id: str,
    reason: str = "",
) -> None:
    """The final state written by the workflow. A stop requested through the API stays `stopped`
    (each statement is conditional, so a stop landing meanwhile is never overwritten)."""
    stamp = now()
    values = {
        Activeflow.started: True,
        Activeflow.executed_actions: msgspec.json.encode(executed).decode(),
        Activeflow.variables: msgspec.json.encode(variables).decode(),
        Activeflow.current_action_id: current_action_id,
        Activeflow.tm_update: stamp,
        Activeflow.tm_end: stamp,
    }
    await Activeflow.update({**values, Activeflow.status: status, Activeflow.reason: reason[:2000]}).where(
        Activeflow.id == activeflow_id, Activeflow.status != "stopped"
    )
    await Activeflow.update(values).where(Activeflow.id == activeflow_id, Activeflow.status == "stopped")


async def list_activeflows(
    customer_id: UUID, conversation_id: UUID | None, status: str | None, page_size: int, page_token: str
):
    conditions = [Activeflow.customer_id == customer_id]
    if conversation_id is not None:
        await get_conversation(customer_id, conversation_id)  # another tenant's id is a 404
        conditions.append(Activeflow.conversation_id == conversation_id)
    if status:
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}")
        conditions.append(Activeflow.status == status)
    return await fetch_page(Activeflow, conditions, page_size, page_token)


async def get_activeflow(customer_id: UUID, activeflow_id: UUID) -> dict[str, Any]:
    return await get_scoped(Activeflow, customer_id, activeflow_id, include_deleted=True)


async def running_activeflow(customer_id: UUID, activeflow_id: UUID) -> dict[str, Any]:
    row = await get_activeflow(customer_id, activeflow_id)
    if row["status"] != "running":
        raise Conflict(f"activeflow {activeflow_id} is already {row['status']}")
    return row


async def mark_stopped(customer_id: UUID, activeflow_id: UUID) -> dict[str, Any]:
    """Records a stop the workflow was told about (or that never needs telling)."""
    await Activeflow.update(
        {
            Activeflow.status: "stopped",
            Activeflow.reason: "stopped through the API",
            Activeflow.tm_update: now(),
        }
    ).where(Activeflow.id == activeflow_id, Activeflow.status == "running")
    return await get_activeflow(customer_id, activeflow_id)


# --- sub-flows (flow_start) -----------------------------------------------------------------


def sub_flow_variables(parent: dict[str, Any], flow_id: UUID, activeflow_id: UUID, given: dict[str, str]):
    """A sub-flow's first variables: its parent's first ones (the conversation and the message
    that started the chain), its own flow.id / activeflow.id, then what flow_start passed."""
    return {
        **stored_variables(parent),
        "flow.id": str(flow_id),
        "activeflow.id": str(activeflow_id),
        "activeflow.parent_id": str(parent["id"]),
        **given,
    }


async def create_sub_flow(
    parent_id: UUID, activeflow_id: UUID, workflow_id: str, flow_id: UUID, given: dict[str, str]
) -> dict[str, Any]:
    """The activeflow of a sub-flow, on its parent's conversation, account and message, running
    the flow's current version; written once (a retry returns the row). It is `started`: its
    parent starts its (child) workflow, recovery never does. BadRequest when the flow is gone."""
    existing = await Activeflow.select().where(Activeflow.id == activeflow_id).first()
    if existing is not None:
        return existing
    parent = await Activeflow.select().where(Activeflow.id == parent_id).first()
    if parent is None:
        raise NotFound(f"activeflow {parent_id} does not exist")
    flow = await live_flow(parent["customer_id"], flow_id)
    if flow is None:
        raise BadRequest(f"flow_id {flow_id} is not a live flow of this customer")
    await Activeflow.insert(
        Activeflow(
            id=activeflow_id,
            customer_id=parent["customer_id"],
            flow_id=flow["id"],
            flow_name=flow["name"],
            conversation_id=parent["conversation_id"],
            account_id=parent["account_id"],
            message_id=parent["message_id"],
            workflow_id=workflow_id,
            flow_version=flow["version"],
            status="running",
            started=True,
            parent_id=parent_id,
            variables=msgspec.json.encode(
                sub_flow_variables(parent, flow["id"], activeflow_id, given)
            ).decode(),
        )
    )
    return await Activeflow.select().where(Activeflow.id == activeflow_id).first()
