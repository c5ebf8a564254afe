"""The worker process: Temporal workflows and activities, plus recovery of sends that never started."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.dialogues import DialogueActivities
from activities.flows import FlowActivities
from activities.handoff import HandoffActivities
from activities.lifecycle import LifecycleActivities
from activities.messages import MessageActivities
from activities.publish import EventPublisher
from activities.webhook_http import WebhookSender
from activities.webhooks import WebhookActivities
from api import temporal
from api.dispatch import ensure_dispatchers
from api.metrics import start_worker_metrics
from hub import activeflows, db, dialogues, outbound
from hub.settings import Settings
from workflows.activeflow import ActiveflowWorkflow
from workflows.inactivity import InactivitySweepWorkflow
from workflows.send import SendMessageWorkflow
from workflows.webhooks import WebhookDeliveryShardWorkflow, WebhookRelayWorkflow

log = logging.getLogger("hub.worker")

WORKFLOWS = [
    SendMessageWorkflow,
    ActiveflowWorkflow,
    WebhookRelayWorkflow,
    WebhookDeliveryShardWorkflow,
    InactivitySweepWorkflow,
]


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, minus re-importing our own deterministic modules for every workflow run
    (that import work was about a fifth of the worker's CPU under load). They hold no mutable
    module state; workflow code still cannot reach I/O through them."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(
        "workflows", "activities.inputs", "hub.actions", "hub.errors", "msgspec"
    )
    return SandboxedWorkflowRunner(restrictions=restrictions)


def build_worker(client: Client, settings: Settings, http: httpx.AsyncClient) -> Worker:
    messages = MessageActivities(http, settings)
    flows = FlowActivities(http, settings, messages)
    webhook_activities = WebhookActivities(
        WebhookSender(settings.webhook_allow_private, settings.webhook_timeout_s),
        EventPublisher(settings.redis_url),
        settings,
    )
    lifecycle = LifecycleActivities()
    handoff = HandoffActivities()
    dialogue = DialogueActivities()
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(),
        max_concurrent_workflow_tasks=settings.worker_workflow_tasks or None,
        max_concurrent_local_activities=settings.worker_local_activities or None,
        activities=[
            messages.deliver_message,
            messages.fail_message,
            flows.load,
            flows.send_message,
            flows.http_call,
            flows.finish,
            webhook_activities.relay_events,
            webhook_activities.deliver_webhooks,
            lifecycle.inactivity_sweep,
            lifecycle.close_for_flow,
            handoff.assign,
            handoff.unassign,
            handoff.tag,
            handoff.prepare_sub_flow,
            dialogue.enter,
            dialogue.consumed,
        ],
    )


def build_dry_run_worker(client: Client, settings: Settings) -> Worker:
    """The dry runs' worker (api.temporal.dry_run_task_queue): the activeflow workflow only, no
    activities, so a dry run has no way to any I/O."""
    return Worker(
        client,
        task_queue=temporal.dry_run_task_queue(settings),
        workflows=[ActiveflowWorkflow],
        activities=[],
        workflow_runner=workflow_runner(),
    )


async def recover_sends(client: Client, settings: Settings, older_than_s: float) -> int:
    """Starts the workflow of every outgoing message left `progressing` without one
    (an API crash between commit and start, or Temporal down at the time). Each message on its
    own: one that cannot start never holds up the others."""
    started = 0
    for message in await outbound.stuck_outgoing(older_than_s):
        try:
            await temporal.start_send(client, settings, message)
            started += 1
        except Exception:
            log.exception("recovery could not start the send of message %s", message["id"])
    return started


async def recover_activeflows(client: Client, settings: Settings, older_than_s: float) -> int:
    """Starts every run whose workflow start was never confirmed (crash or outage after commit).
    Each run on its own; one whose start keeps failing ends `failed` after
    `recovery_max_start_attempts` rounds, with the error as its reason."""
    started = 0
    for row in await activeflows.unstarted(older_than_s):
        try:
            await temporal.start_activeflow(client, settings, row)
            started += 1
        except Exception as exc:
            log.exception("recovery could not start activeflow %s", row["id"])
            error = f"{type(exc).__name__}: {exc}"
            if await activeflows.start_failed(row["id"], error, settings.recovery_max_start_attempts):
                log.error("activeflow %s failed: its workflow could not be started", row["id"])
    return started


async def recover_dialogue_replies(client: Client, settings: Settings, older_than_s: float) -> int:
    """Signals every message routed to a run in dialogue whose signal was never confirmed (a crash
    or Temporal outage between the inbound commit and the signal). The run ignores a message id
    it has, so a signal that did land before the crash delivers nothing twice."""
    delivered = 0
    for row in await dialogues.undelivered(older_than_s):
        try:
            if row["run_status"] != "running":
                await dialogues.mark_undeliverable(row["id"])  # the run ended: unconsumed
            elif await temporal.deliver_reply(client, row):
                delivered += 1
        except Exception:
            log.exception("recovery could not deliver dialogue message %s", row["message_id"])
    return delivered


async def recovery_round(client: Client, settings: Settings) -> None:
    """One round of every recovery, each independent of the others' failures."""
    parts = [
        ("activeflow", lambda: recover_activeflows(client, settings, settings.recovery_interval_s)),
        ("send", lambda: recover_sends(client, settings, settings.recovery_interval_s)),
        ("dialogue", lambda: recover_dialogue_replies(client, settings, settings.recovery_interval_s)),
        ("dispatcher", lambda: ensure_dispatchers(client, settings)),
    ]
    for name, part in parts:
        try:
            await part()
        except Exception:  # the database or Temporal unreachable: the next round tries again
            log.exception("%s recovery round failed", name)


async def recovery_loop(client: Client, settings: Settings) -> None:
    while True:
        await recovery_round(client, settings)
        await asyncio.sleep(settings.recovery_interval_s)


async def run_worker(settings: Settings) -> None:
    engine = await db.open_engine(settings.resolved_database_url)
    await db.start(engine, settings.db_pool_size)
    client = await temporal.connect(settings)
    metrics_server = await start_worker_metrics(settings)
    timeout = httpx.Timeout(settings.provider_timeout_s)
    async with httpx.AsyncClient(timeout=timeout) as http:
        worker = build_worker(client, settings, http)
        recovery = asyncio.create_task(recovery_loop(client, settings))
        log.info(
            "worker polling task queue %r on %s",
            settings.temporal_task_queue,
            settings.resolved_temporal_address,
        )
        try:
            async with build_dry_run_worker(client, settings):
                await worker.run()
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
            if metrics_server is not None:
                await metrics_server.cleanup()
            await db.stop(engine)
