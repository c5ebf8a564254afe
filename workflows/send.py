"""SendMessageWorkflow (`send-<message id>`): deliver one outgoing message, retrying provider outages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from activities.inputs import DeliverInput, DeliverResult, FailInput


@dataclass
class SendInput:
    message_id: str = ""
    # Overridable so tests can compress the schedule; defaults suit real providers.
    initial_retry_s: float = 1.0
    max_retry_interval_s: float = 300.0
    max_attempts: int = 20
    # How long one provider call may run before Temporal retries it (e.g. its worker died).
    attempt_timeout_s: float = 30.0


def send_workflow_id(message_id: str) -> str:
    return f"send-{message_id}"


@workflow.defn(name="SendMessage")
class SendMessageWorkflow:
    @workflow.run
    async def run(self, data: SendInput) -> str:
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=data.initial_retry_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=data.max_retry_interval_s),
            maximum_attempts=data.max_attempts,
        )
        try:
            result: DeliverResult = await workflow.execute_activity(
                "deliver_message",
                DeliverInput(message_id=data.message_id),
                result_type=DeliverResult,
                start_to_close_timeout=timedelta(seconds=data.attempt_timeout_s),
                retry_policy=retry,
            )
            return result.status
        except ActivityError as exc:
            reason = f"provider unavailable after {data.max_attempts} attempts: {exc.cause or exc}"
            await workflow.execute_activity(
                "fail_message",
                FailInput(message_id=data.message_id, reason=reason[:1000]),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            )
            return "failed"
