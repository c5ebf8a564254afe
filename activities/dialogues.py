"""Activities of dialogues (wait_for_reply): entering a dialogue, consuming an inbox message."""

from __future__ import annotations

import uuid

from temporalio import activity

from activities.inputs import DialogueConsumedInput, DialogueEnterInput, DialogueEnterResult
from hub import dialogues


class DialogueActivities:
    @activity.defn(name="flow_dialogue_enter")
    async def enter(self, data: DialogueEnterInput) -> DialogueEnterResult:
        superseded = await dialogues.enter(uuid.UUID(data.activeflow_id))
        return DialogueEnterResult(superseded_workflow_ids=superseded)

    @activity.defn(name="flow_dialogue_consumed")
    async def consumed(self, data: DialogueConsumedInput) -> None:
        await dialogues.consumed(uuid.UUID(data.activeflow_id), uuid.UUID(data.message_id))
