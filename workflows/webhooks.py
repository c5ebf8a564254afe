"""The webhook relay (`webhook-relay`) and delivery shards (`webhook-shard-<n>`): long-lived loops.

Each iteration is one activity round that works for `round_s` seconds (relaying outbox events,
or delivering a shard's queue); the workflow keeps exactly one round running per id, retries it
after a crash or outage, and continues as new before its history grows long. The work itself
lives in the database (the outbox and `webhook_deliveries`), so nothing is lost between rounds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

from activities.inputs import DeliverShardInput, DeliverShardResult, RelayInput, RelayResult

RELAY_WORKFLOW_ID = "webhook-relay"
ROUNDS_PER_RUN = 100
# Rounds retry for as long as it takes (database or Redis outage), at most every 30 s.
ROUND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


def shard_workflow_id(shard: int) -> str:
    return f"webhook-shard-{shard}"


@dataclass
class RelayWorkflowInput:
    round_s: float = 60.0
    batch_size: int = 1000
    # A round that stops heartbeating (its worker died) is started again elsewhere after this long.
    heartbeat_timeout_s: float = 20.0


@dataclass
class DeliveryShardInput:
    shard: int = 0
    shards: int = 1
    round_s: float = 60.0
    # The longest one post may take: a round ends only after its posts in flight have.
    attempt_timeout_s: float = 5.0
    heartbeat_timeout_s: float = 20.0


@workflow.defn(name="WebhookRelay")
class WebhookRelayWorkflow:
    @workflow.run
    async def run(self, data: RelayWorkflowInput) -> None:
        for _ in range(ROUNDS_PER_RUN):
            await workflow.execute_activity(
                "relay_events",
                RelayInput(round_s=data.round_s, batch_size=data.batch_size),
                result_type=RelayResult,
                start_to_close_timeout=timedelta(seconds=data.round_s + 60),
                heartbeat_timeout=timedelta(seconds=data.heartbeat_timeout_s),
                retry_policy=ROUND_RETRY,
            )
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(data)


@workflow.defn(name="WebhookDeliveryShard")
class WebhookDeliveryShardWorkflow:
    @workflow.run
    async def run(self, data: DeliveryShardInput) -> None:
        for _ in range(ROUNDS_PER_RUN):
            result: DeliverShardResult = await workflow.execute_activity(
                "deliver_webhooks",
                DeliverShardInput(shard=data.shard, shards=data.shards, round_s=data.round_s),
                result_type=DeliverShardResult,
                start_to_close_timeout=timedelta(seconds=data.round_s + 2 * data.attempt_timeout_s + 60),
                heartbeat_timeout=timedelta(seconds=data.heartbeat_timeout_s),
                retry_policy=ROUND_RETRY,
            )
            workflow.set_current_details(
                f"last round: {result.delivered} delivered, {result.retried} to retry, {result.failed} failed"
            )
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(data)
