"""Dialogues: a run waiting for replies takes its conversation's inbound messages (its inbox).

A run is in dialogue from its first `wait_for_reply` until it ends, or until another run of the
conversation enters a wait (at most one run per conversation is in dialogue). While the
conversation is unassigned, an inbound message goes to that run's inbox instead of starting a new
activeflow; the routing is recorded in the inbound transaction, the workflow hears of it by a
signal after the commit (recovery re-signals what was never confirmed)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
from piccolo.engine.postgres import PostgresEngine

from hub import activeflows
from hub.db import current_engine, transaction
from hub.permissions import NIL_UUID
from hub.repo import now
from hub.tables import Activeflow, DialogueMessage, Message


async def locked_first(query) -> dict[str, Any] | None:
    """The first row of a select, locked FOR UPDATE on PostgreSQL until the transaction ends
    (SQLite's write transactions are serial already)."""
    if isinstance(current_engine(), PostgresEngine):
        query = query.lock_rows("UPDATE")
    return await query.first()


@dataclass
class Routing:
    """What an inbound message triggered: a new run to start, or a delivery to a run in dialogue."""

    activeflow: dict[str, Any] | None = None
    # The dialogue_messages row (with `workflow_id` of its run) to signal after the commit.
    delivery: dict[str, Any] | None = None


async def route_inbound(
    account: dict[str, Any], conversation: dict[str, Any], message: dict[str, Any]
) -> Routing:
    """Inside the inbound transaction: the message goes to the conversation's run in dialogue (if
    the conversation is unassigned and one is), else it may start a new activeflow.

    The run's row is locked (PostgreSQL) while the position is taken, so concurrent messages get
    positions in commit order."""
    if str(conversation["owner_id"]) != str(NIL_UUID):
        return Routing()  # the agent's messages: no run is fed, none starts
    run = await locked_first(
        Activeflow.select(Activeflow.id, Activeflow.workflow_id).where(
            Activeflow.conversation_id == conversation["id"],
            Activeflow.in_dialogue.eq(True),
            Activeflow.status == "running",
        )
    )
    if run is None:
        return Routing(activeflow=await activeflows.create_for_message(account, conversation, message))
    taken = await DialogueMessage.count().where(DialogueMessage.activeflow_id == run["id"])
    stamp = now()
    row = {
        "id": uuid.uuid4(),
        "customer_id": conversation["customer_id"],
        "activeflow_id": run["id"],
        "conversation_id": conversation["id"],
        "message_id": message["id"],
        "position": taken + 1,
        "state": "routed",
        "delivered": False,
        "tm_create": stamp,
        "tm_update": stamp,
    }
    await DialogueMessage.insert(DialogueMessage(**row))
    return Routing(delivery={**row, "workflow_id": run["workflow_id"]})


async def reply_of(delivery: dict[str, Any]) -> dict[str, Any] | None:
    """What the run's `reply` signal carries (None: the message is gone)."""
    message = (
        await Message.select(Message.id, Message.text, Message.channel, Message.medias)
        .where(Message.id == delivery["message_id"])
        .first()
    )
    return reply_payload(delivery, message) if message else None


def reply_payload(delivery: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """The message as wait_for_reply exposes it, with its place in the run's inbox."""
    medias = message.get("medias") or "[]"
    if isinstance(medias, str):
        medias = msgspec.json.decode(medias)
    return {
        "message_id": str(message["id"]),
        "position": delivery["position"],
        "text": message.get("text") or "",
        "channel": message.get("channel") or "",
        "media_urls": [str(m.get("url", "")) for m in medias if isinstance(m, dict)],
    }


async def enter(activeflow_id: UUID) -> list[str]:
    """The run enters (or stays in) dialogue; any other run of its conversation leaves it.
    Returns the workflow ids of the superseded runs (the workflow tells them)."""
    async with transaction(current_engine()):
        run = await locked_first(Activeflow.select().where(Activeflow.id == activeflow_id))
        if run is None or run["status"] != "running":
            return []
        others = (
            await Activeflow.update({Activeflow.in_dialogue: False, Activeflow.tm_update: now()})
            .where(
                Activeflow.conversation_id == run["conversation_id"],
                Activeflow.in_dialogue.eq(True),
                Activeflow.id != activeflow_id,
            )
            .returning(Activeflow.workflow_id)
        )
        if not run["in_dialogue"]:
            await Activeflow.update({Activeflow.in_dialogue: True, Activeflow.tm_update: now()}).where(
                Activeflow.id == activeflow_id
            )
    return [r["workflow_id"] for r in others]


async def consumed(activeflow_id: UUID, message_id: UUID) -> None:
    await DialogueMessage.update({DialogueMessage.state: "consumed", DialogueMessage.tm_update: now()}).where(
        DialogueMessage.activeflow_id == activeflow_id, DialogueMessage.message_id == message_id
    )


async def end(activeflow_id: UUID) -> None:
    """The run ended: out of dialogue; what its waits never took stays unconsumed (starts nothing)."""
    stamp = now()
    await Activeflow.update({Activeflow.in_dialogue: False}).where(
        Activeflow.id == activeflow_id, Activeflow.in_dialogue.eq(True)
    )
    await DialogueMessage.update(
        {
            DialogueMessage.state: "unconsumed",
            DialogueMessage.delivered: True,
            DialogueMessage.tm_update: stamp,
        }
    ).where(DialogueMessage.activeflow_id == activeflow_id, DialogueMessage.state == "routed")


async def mark_delivered(delivery_id: UUID) -> None:
    await DialogueMessage.update({DialogueMessage.delivered: True}).where(DialogueMessage.id == delivery_id)


async def mark_undeliverable(delivery_id: UUID) -> None:
    """The run ended before it could hear of the message: unconsumed, nothing more to do."""
    await DialogueMessage.update(
        {
            DialogueMessage.delivered: True,
            DialogueMessage.state: "unconsumed",
            DialogueMessage.tm_update: now(),
        }
    ).where(DialogueMessage.id == delivery_id, DialogueMessage.state == "routed")


async def undelivered(older_than_s: float, limit: int = 500) -> list[dict[str, Any]]:
    """Routed messages whose signal was never confirmed (a crash between commit and signal), with
    what the signal carries: for recovery."""
    rows = (
        await DialogueMessage.select()
        .where(
            DialogueMessage.delivered.eq(False),
            DialogueMessage.tm_create < now() - timedelta(seconds=older_than_s),
        )
        .order_by(DialogueMessage.tm_create)
        .limit(limit)
    )
    if not rows:
        return []
    runs = {
        r["id"]: r
        for r in await Activeflow.select(Activeflow.id, Activeflow.workflow_id, Activeflow.status).where(
            Activeflow.id.is_in(list({row["activeflow_id"] for row in rows}))
        )
    }
    none: dict[str, Any] = {}
    return [
        {
            **row,
            "workflow_id": runs.get(row["activeflow_id"], none).get("workflow_id", ""),
            "run_status": runs.get(row["activeflow_id"], none).get("status"),
        }
        for row in rows
    ]


async def inbox(activeflow_id: UUID) -> list[dict[str, Any]]:
    return (
        await DialogueMessage.select(
            DialogueMessage.message_id, DialogueMessage.position, DialogueMessage.state
        )
        .where(DialogueMessage.activeflow_id == activeflow_id)
        .order_by(DialogueMessage.position)
    )
