"""Activities of a flow's handoff actions (conversation_assign, _unassign, _tag) and of flow_start
(the sub-flow's activeflow row). Each action is one activity: the API's own hub/ operation, made
as an admin would, so it writes the same rows and the same events."""

from __future__ import annotations

import uuid

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import FlowConversationInput, FlowConversationResult, FlowStartInput, FlowStartResult
from hub import activeflows, conversations
from hub.errors import HubError
from hub.permissions import ADMIN, NIL_UUID
from hub.tags import tags_of


def _refused(exc: HubError) -> ApplicationError:
    # The conversation or the agent is gone, the tags would be too many...: retrying cannot help.
    return ApplicationError(exc.message, type="FlowActionFailed", non_retryable=True)


def _result(row: dict) -> FlowConversationResult:
    return FlowConversationResult(owner_id=str(row["owner_id"]), tags=tags_of(row))


class HandoffActivities:
    @activity.defn(name="flow_assign_conversation")
    async def assign(self, data: FlowConversationInput) -> FlowConversationResult:
        """conversation_assign: PUT /conversations/{id} {"owner_id"} (the agent is checked again)."""
        try:
            row = await conversations.update_conversation(
                uuid.UUID(data.customer_id),
                uuid.UUID(data.conversation_id),
                {"owner_id": uuid.UUID(data.agent_id)},
            )
        except HubError as exc:
            raise _refused(exc) from exc
        return _result(row)

    @activity.defn(name="flow_unassign_conversation")
    async def unassign(self, data: FlowConversationInput) -> FlowConversationResult:
        """conversation_unassign: POST /conversations/{id}/unassign."""
        try:
            row = await conversations.unassign(
                uuid.UUID(data.customer_id), uuid.UUID(data.conversation_id), NIL_UUID, ADMIN
            )
        except HubError as exc:
            raise _refused(exc) from exc
        return _result(row)

    @activity.defn(name="flow_tag_conversation")
    async def tag(self, data: FlowConversationInput) -> FlowConversationResult:
        """conversation_tag: POST /conversations/{id}/tags and DELETE .../tags/{tag}, in one change."""
        try:
            row = await conversations.change_tags(
                uuid.UUID(data.customer_id),
                uuid.UUID(data.conversation_id),
                NIL_UUID,
                ADMIN,
                add=data.add,
                remove=data.remove,
            )
        except HubError as exc:
            raise _refused(exc) from exc
        return _result(row)

    @activity.defn(name="flow_start_prepare")
    async def prepare_sub_flow(self, data: FlowStartInput) -> FlowStartResult:
        """flow_start: the sub-flow's activeflow row (once), before its child workflow starts."""
        try:
            row = await activeflows.create_sub_flow(
                uuid.UUID(data.parent_activeflow_id),
                uuid.UUID(data.activeflow_id),
                data.workflow_id,
                uuid.UUID(data.flow_id),
                data.variables,
            )
        except HubError as exc:
            raise _refused(exc) from exc
        return FlowStartResult(flow_version=row["flow_version"])
