"""Activities of the conversation lifecycle: the inactivity sweep's round and a flow's
conversation_close; and telling the runs a close stopped that they are stopped."""

from __future__ import annotations

import logging
import uuid

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.inputs import FlowCloseInput, InactivitySweepInput, InactivitySweepResult
from hub import lifecycle
from hub.errors import HubError

log = logging.getLogger("hub.lifecycle")

# Temporal cannot take the call now (versus a bug of ours).
_UNAVAILABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.RESOURCE_EXHAUSTED)


async def tell_stopped(client: Client, workflow_ids: list[str]) -> None:
    """Signals `stop` to runs already marked stopped in the database (a closed conversation's).
    Best effort: a run that is over or not started is fine; with Temporal down the run goes on
    until it ends, but its sends are refused (the conversation is closed) and its row stays
    `stopped`."""
    for workflow_id in workflow_ids:
        try:
            await client.get_workflow_handle(workflow_id).signal("stop")
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue
            if exc.status not in _UNAVAILABLE:
                raise
            log.warning("stop of %s not delivered now (%s)", workflow_id, exc)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("stop of %s not delivered now (%s)", workflow_id, exc)


class LifecycleActivities:
    @activity.defn(name="inactivity_sweep")
    async def inactivity_sweep(self, data: InactivitySweepInput) -> InactivitySweepResult:
        """Closes every conversation due (batch after batch), then tells their runs to stop.
        Closing is conditional and committed with its event, so a retried round closes nothing
        twice."""
        closed = []
        while True:
            batch = await lifecycle.close_inactive(data.batch_size)
            closed.extend(batch)
            activity.heartbeat(len(closed))
            if len(batch) < data.batch_size:
                break
        await tell_stopped(activity.client(), [w for item in closed for w in item.stopped_workflow_ids])
        if closed:
            log.info("inactivity sweep closed %d conversations", len(closed))
        return InactivitySweepResult(closed=len(closed))

    @activity.defn(name="flow_close_conversation")
    async def close_for_flow(self, data: FlowCloseInput) -> None:
        """conversation_close: closes the run's conversation (reason `flow`; a closed one stays as
        it is); the conversation's other runs stop, this one goes on."""
        try:
            closed = await lifecycle.close_conversation(
                uuid.UUID(data.customer_id),
                uuid.UUID(data.conversation_id),
                "flow",
                keep_activeflow_id=uuid.UUID(data.activeflow_id),
                note=data.note,
            )
        except HubError as exc:  # the conversation was deleted meanwhile: the action fails
            raise ApplicationError(exc.message, type="FlowActionFailed", non_retryable=True) from exc
        await tell_stopped(activity.client(), closed.stopped_workflow_ids)
