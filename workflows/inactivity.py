"""The inactivity sweep: one long-running workflow that, every `sweep_s`, closes the conversations
that have been quiet for longer than their customer's `inactivity_close_s`.

Why a sweep and not a timer per conversation: measured on this machine (tests/bench/inactivity.py,
docs/lifecycle.md) a timer workflow per open conversation costs a Temporal signal on every message
(about 40 ms, at most ~130 signal-with-starts/s) and ~10 GB of dev-server memory at 100,000 open
conversations, while the sweep reads a partial index (0.1 ms when nothing is due, 7 ms per 500
closes) and the per-message cost is the `tm_last_message` write the inbox needs anyway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from activities.inputs import InactivitySweepInput, InactivitySweepResult

SWEEP_WORKFLOW_ID = "inactivity-sweep"
ROUNDS_PER_RUN = 200
# A round retries for as long as the database is down, at most every 30 s: closes are delayed, never lost.
ROUND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@dataclass
class InactivitySweepWorkflowInput:
    sweep_s: float = 30.0
    batch_size: int = 500


@workflow.defn(name="InactivitySweep")
class InactivitySweepWorkflow:
    @workflow.run
    async def run(self, data: InactivitySweepWorkflowInput) -> None:
        for _ in range(ROUNDS_PER_RUN):
            result: InactivitySweepResult = await workflow.execute_activity(
                "inactivity_sweep",
                InactivitySweepInput(batch_size=data.batch_size),
                result_type=InactivitySweepResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=ROUND_RETRY,
            )
            workflow.set_current_details(f"last round closed {result.closed} conversations")
            await workflow.sleep(timedelta(seconds=data.sweep_s))
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(data)
