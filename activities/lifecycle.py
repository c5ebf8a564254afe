"""Activities of the conversation lifecycle: the inactivity sweep's round."""

from __future__ import annotations

import logging

from temporalio import activity
from temporalio.service import RPCError, RPCStatusCode

from activities.inputs import InactivitySweepInput, InactivitySweepResult
from hub import lifecycle

log = logging.getLogger("hub.lifecycle")


class LifecycleActivities:
    @activity.defn(name="inactivity_sweep")
    async def inactivity_sweep(self, data: InactivitySweepInput) -> InactivitySweepResult:
        """Closes every conversation due (batch after batch), then tells their runs to stop.
        Closing is conditional and committed with its event, so a retried round closes nothing
        twice; a stop signal that does not arrive leaves a run whose sends are refused (closed)."""
        closed = []
        while True:
            batch = await lifecycle.close_inactive(data.batch_size)
            closed.extend(batch)
            activity.heartbeat(len(closed))
            if len(batch) < data.batch_size:
                break
        client = activity.client()
        for item in closed:
            for workflow_id in item.stopped_workflow_ids:
                try:
                    await client.get_workflow_handle(workflow_id).signal("stop")
                except RPCError as exc:
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        log.warning(
                            "stop of %s after an inactivity close not delivered: %s", workflow_id, exc
                        )
        if closed:
            log.info("inactivity sweep closed %d conversations", len(closed))
        return InactivitySweepResult(closed=len(closed))
