"""Dry runs of flows (POST /flows/{id}/test): the plan and variables of a sandboxed run.

A dry run executes the same interpreter and validation as a real run, but touches no table: its
plan travels in the workflow input and every side effect is captured by the workflow."""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

import msgspec

from hub.actions import ActionIn, parse_stored
from hub.activeflows import initial_variables
from hub.flows import FlowRules, check_references, encode_actions, get_flow

CHANNELS = ("sms", "line", "email")


async def stored_plan(customer_id: UUID, flow_id: UUID) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The flow (404 if it is not the customer's) and its current actions, validated again."""
    flow = await get_flow(customer_id, flow_id)
    return flow, parse_stored(msgspec.json.encode(flow["actions"]).decode())


async def document_plan(customer_id: UUID, actions: list[ActionIn], rules: FlowRules) -> list[dict[str, Any]]:
    """An unsaved flow document, validated exactly as a save would (400 naming the action)."""
    _, normalised = encode_actions(actions, rules)
    # An unsaved document is a flow of its own: no other flow calls it yet.
    await check_references(customer_id, normalised, uuid4())
    return normalised


def variables(flow_id: UUID | str, run_id: UUID, text: str, channel: str) -> dict[str, str]:
    """A run's initial variables for a made-up inbound message (no conversation exists)."""
    conversation = {"id": "", "self_address": "{}", "peer_address": "{}", "status": "open", "account_id": ""}
    message = {
        "id": "dry-run-message",
        "text": text,
        "direction": "incoming",
        "channel": channel,
        "participant_id": "",
        "account_id": "",
    }
    return initial_variables(conversation, message, flow_id, run_id)
