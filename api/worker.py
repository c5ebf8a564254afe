"""The worker process: Temporal workflows and activities, plus recovery of sends that never started."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.flows import FlowActivities
from activities.messages import MessageActivities
from api import temporal
from hub import activeflows, db, outbound
from hub.settings import Settings
from workflows.activeflow import ActiveflowWorkflow
from workflows.send import SendMessageWorkflow

log = logging.getLogger("hub.worker")

WORKFLOWS = [SendMessageWorkflow, ActiveflowWorkflow]


def build_worker(client: Client, settings: Settings, http: httpx.AsyncClient) -> Worker:
    messages = MessageActivities(http, settings)
    flows = FlowActivities(http, settings, messages)
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=WORKFLOWS,
        activities=[
            messages.deliver_message,
            messages.fail_message,
            flows.send_message,
            flows.http_call,
            flows.finish,
        ],
    )


async def recover_sends(client: Client, settings: Settings, older_than_s: float) -> int:
    """Starts the workflow of every outgoing message left `progressing` without one
    (an API crash between commit and start, or Temporal down at the time)."""
    started = 0
    for message in await outbound.stuck_outgoing(older_than_s):
        await temporal.start_send(client, settings, message)
        started += 1
    return started


async def recover_activeflows(client: Client, settings: Settings, older_than_s: float) -> int:
    """Starts every run whose workflow start was never confirmed (crash or outage after commit)."""
    rows = await activeflows.unstarted(older_than_s)
    for row in rows:
        await temporal.start_activeflow(client, settings, row)
    return len(rows)


async def recovery_loop(client: Client, settings: Settings) -> None:
    while True:
        try:
            await recover_activeflows(client, settings, older_than_s=settings.recovery_interval_s)
            await recover_sends(client, settings, older_than_s=settings.recovery_interval_s)
        except Exception:  # keep the loop alive; the next round retries
            log.exception("send recovery round failed")
        await asyncio.sleep(settings.recovery_interval_s)


async def run_worker(settings: Settings) -> None:
    engine = db.engine_from_url(settings.resolved_database_url)
    await db.start(engine, settings.db_pool_size)
    client = await temporal.connect(settings)
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
            await worker.run()
        finally:
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
            await db.stop(engine)
