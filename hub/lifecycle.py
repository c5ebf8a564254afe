"""Conversation lifecycle: close and reopen, and what closing does to the conversation's runs."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from hub import events, metrics
from hub.conversations import get_conversation, locked_conversation, updated_event_now
from hub.db import current_engine, transaction
from hub.errors import BadRequest, Conflict
from hub.permissions import NIL_UUID, check_owner_or_admin
from hub.repo import now
from hub.tables import Activeflow, Conversation, Customer, Participant

CLOSE_REASONS = ("api", "flow", "inactivity")
CLOSED_RUN_REASON = "conversation closed"


@dataclass
class Closed:
    conversation: dict[str, Any]
    # Whether this call closed it (False: it was closed already; nothing was written).
    changed: bool
    # Workflows of the runs this close stopped: they are told to stop after the commit.
    stopped_workflow_ids: list[str] = field(default_factory=list)


async def close_conversation(
    customer_id: UUID,
    conversation_id: UUID,
    reason: str,
    agent_id: UUID | None = None,
    permission: int = 0,
    keep_activeflow_id: UUID | None = None,
    note: str = "",
) -> Closed:
    """Closes an open conversation (`agent_id` given: the owning agent or admin/manager only):
    status `closed`, its running activeflows `stopped`, one `conversation_updated`. Closing a
    closed conversation changes nothing. `keep_activeflow_id`: the run that closes it (a flow's
    conversation_close) goes on; `note`: the flow's free-text reason (`closed_note`)."""
    if reason not in CLOSE_REASONS:
        raise BadRequest(f"closed_reason must be one of {', '.join(CLOSE_REASONS)}")
    async with transaction(current_engine()):
        row = await locked_conversation(customer_id, conversation_id)
        if agent_id is not None:
            check_owner_or_admin(agent_id, permission, row["owner_id"], "close")
        if row["status"] == "closed":
            return Closed(row, changed=False)
        stamp = now()
        await Conversation.update(
            {
                Conversation.status: "closed",
                Conversation.tm_closed: stamp,
                Conversation.closed_reason: reason,
                Conversation.closed_note: note[:200],
                Conversation.tm_update: stamp,
            }
        ).where(Conversation.id == conversation_id)
        await _set_participants_status(conversation_id, "closed")
        stopped = await _stop_runs(conversation_id, keep_activeflow_id)
        row = await get_conversation(customer_id, conversation_id)
        await events.emit(await updated_event_now(row))
    metrics.conversations_closed(reason)
    return Closed(row, changed=True, stopped_workflow_ids=stopped)


async def reopen_conversation(
    customer_id: UUID, conversation_id: UUID, agent_id: UUID, permission: int
) -> dict[str, Any]:
    """Opens a closed conversation again (the owning agent or admin/manager); an open one stays.
    409 when one of its participants is live in another open conversation now (a message from it
    opened a new conversation meanwhile): an address belongs to one open conversation."""
    async with transaction(current_engine()):
        row = await locked_conversation(customer_id, conversation_id)
        check_owner_or_admin(agent_id, permission, row["owner_id"], "reopen")
        if row["status"] == "open":
            return row
        await _check_participants_free(conversation_id)
        await _set_participants_status(conversation_id, "open")
        await Conversation.update(
            {
                Conversation.status: "open",
                Conversation.tm_closed: None,
                Conversation.closed_reason: "",
                Conversation.closed_note: "",
                Conversation.tm_update: now(),
            }
        ).where(Conversation.id == conversation_id)
        row = await get_conversation(customer_id, conversation_id)
        await events.emit(await updated_event_now(row))
    return row


async def _set_participants_status(conversation_id: UUID, status: str) -> None:
    """Participants carry their conversation's status: the unique index over live addresses
    covers open conversations only, so a closed conversation's addresses match nothing."""
    try:
        await Participant.update({Participant.conversation_status: status}).where(
            Participant.conversation_id == conversation_id, Participant.tm_delete.is_null()
        )
    except (asyncpg.UniqueViolationError, sqlite3.IntegrityError) as exc:
        # A message opened another conversation for one of them after the check (reopen only).
        raise Conflict("a participant of this conversation is in another open conversation now") from exc


_HELD_ELSEWHERE = """
SELECT mine.target, other.conversation_id FROM participants mine
JOIN participants other
  ON other.customer_id = mine.customer_id AND other.account_id = mine.account_id
 AND other.address_type = mine.address_type AND other.target = mine.target
WHERE mine.conversation_id = {} AND mine.tm_delete IS NULL
  AND other.tm_delete IS NULL AND other.conversation_status = 'open'
  AND other.conversation_id != mine.conversation_id
LIMIT 1
"""


async def _check_participants_free(conversation_id: UUID) -> None:
    """409 when one of the conversation's live addresses is live in another open conversation
    (one statement, over the live-address index)."""
    held = await Participant.raw(_HELD_ELSEWHERE, conversation_id)
    if held:
        raise Conflict(
            f"participant {held[0]['target']} is in open conversation {held[0]['conversation_id']} "
            "now; close that one first"
        )


async def _stop_runs(conversation_id: UUID, keep_activeflow_id: UUID | None = None) -> list[str]:
    """Marks the conversation's running activeflows stopped (recovery never starts a stopped one);
    returns their workflow ids, to be told to stop."""
    rows = (
        await Activeflow.update(
            {Activeflow.status: "stopped", Activeflow.reason: CLOSED_RUN_REASON, Activeflow.tm_update: now()}
        )
        .where(
            Activeflow.conversation_id == conversation_id,
            Activeflow.status == "running",
            Activeflow.id != (keep_activeflow_id or NIL_UUID),
        )
        .returning(Activeflow.workflow_id)
    )
    return [r["workflow_id"] for r in rows]


async def close_inactive(batch_size: int = 500) -> list[Closed]:
    """Closes (reason `inactivity`) up to `batch_size` open conversations per customer that had no
    message for the customer's `inactivity_close_s`. Each close is conditional on the conversation
    still being open and still quiet, in the transaction of its event: a sweep that runs twice, or
    races a new message, never closes twice or closes a conversation that just spoke."""
    customers = await Customer.select(Customer.id, Customer.inactivity_close_s).where(
        Customer.inactivity_close_s > 0, Customer.tm_delete.is_null()
    )
    closed: list[Closed] = []
    for customer in customers:
        cutoff = now() - timedelta(seconds=customer["inactivity_close_s"])
        quiet = Conversation.tm_last_message.is_null() & (Conversation.tm_create < cutoff)
        due = (Conversation.tm_last_message < cutoff) | quiet
        candidates = (
            await Conversation.select(Conversation.id)
            .where(
                Conversation.customer_id == customer["id"],
                Conversation.status == "open",
                Conversation.tm_delete.is_null(),
                due,
            )
            .order_by(Conversation.tm_last_message)
            .limit(batch_size)
        )
        for candidate in candidates:
            async with transaction(current_engine()):
                stamp = now()
                rows = (
                    await Conversation.update(
                        {
                            Conversation.status: "closed",
                            Conversation.tm_closed: stamp,
                            Conversation.closed_reason: "inactivity",
                            Conversation.tm_update: stamp,
                        }
                    )
                    .where(Conversation.id == candidate["id"], Conversation.status == "open", due)
                    .returning(*Conversation.all_columns())
                )
                if not rows:
                    continue  # a message came, or another sweep or an agent closed it meanwhile
                await _set_participants_status(candidate["id"], "closed")
                stopped = await _stop_runs(candidate["id"])
                await events.emit(await updated_event_now(rows[0]))
            closed.append(Closed(rows[0], changed=True, stopped_workflow_ids=stopped))
    if closed:
        metrics.conversations_closed("inactivity", len(closed))
    return closed
