"""Starting the long-running workflows: webhook relay, delivery shards, inactivity sweep.
Idempotent by workflow id: every worker ensures them on start and then periodically, and
whichever start comes first wins."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from hub.settings import Settings
from workflows.inactivity import SWEEP_WORKFLOW_ID, InactivitySweepWorkflow, InactivitySweepWorkflowInput
from workflows.webhooks import (
    RELAY_WORKFLOW_ID,
    DeliveryShardInput,
    RelayWorkflowInput,
    WebhookDeliveryShardWorkflow,
    WebhookRelayWorkflow,
    shard_workflow_id,
)


async def ensure_dispatchers(client: Client, settings: Settings) -> None:
    """Starts `webhook-relay`, `webhook-shard-0..n-1` and `inactivity-sweep` unless they run already."""
    policies = {
        "task_queue": settings.temporal_task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    }
    await client.start_workflow(
        WebhookRelayWorkflow.run,
        RelayWorkflowInput(
            round_s=settings.webhook_round_s, heartbeat_timeout_s=settings.webhook_heartbeat_timeout_s
        ),
        id=RELAY_WORKFLOW_ID,
        **policies,
    )
    for shard in range(settings.webhook_shards):
        await client.start_workflow(
            WebhookDeliveryShardWorkflow.run,
            DeliveryShardInput(
                shard=shard,
                shards=settings.webhook_shards,
                round_s=settings.webhook_round_s,
                attempt_timeout_s=settings.webhook_timeout_s,
                heartbeat_timeout_s=settings.webhook_heartbeat_timeout_s,
            ),
            id=shard_workflow_id(shard),
            **policies,
        )
    await client.start_workflow(
        InactivitySweepWorkflow.run,
        InactivitySweepWorkflowInput(sweep_s=settings.inactivity_sweep_s),
        id=SWEEP_WORKFLOW_ID,
        **policies,
    )
