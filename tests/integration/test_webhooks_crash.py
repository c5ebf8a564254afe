"""A worker killed (SIGKILL) in the middle of a delivery round loses no webhook: the round starts
again on the other worker once its heartbeat times out, and every event arrives, in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections import defaultdict

import pytest
from temporalio.service import RPCError

from api.dispatch import ensure_dispatchers
from hub import events
from hub.db import current_engine, transaction
from hub.dispatch import bucket_of
from hub.tables import WebhookDelivery
from tests.helpers import make_tenant, wait_for
from tests.webhook_receiver import Receiver
from workflows.webhooks import RELAY_WORKFLOW_ID, shard_workflow_id

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dispatchers")]


def worker_process(settings) -> subprocess.Popen:
    """A `hub worker` process polling `settings.temporal_task_queue`."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_JWT_SECRET": settings.jwt_secret,
        # Several workers on one machine: no metrics port each (the default 9000 would clash).
        "HUB_WORKER_METRICS_PORT": "0",
        "HUB_REDIS_URL": settings.redis_url,
        "HUB_TEMPORAL_ADDRESS": settings.temporal_address,
        "HUB_TEMPORAL_TASK_QUEUE": settings.temporal_task_queue,
        "HUB_SMS_API_URL": settings.sms_api_url,
        "HUB_LINE_API_URL": settings.line_api_url,
        "HUB_PUBLIC_URL": settings.public_url,
        "HUB_RECOVERY_INTERVAL_S": "3600",
        "HUB_WEBHOOK_ALLOW_PRIVATE": "true",
        "HUB_WEBHOOK_RETRY_SCHEDULE_S": settings.webhook_retry_schedule_s,
        "HUB_WEBHOOK_POLL_INTERVAL_S": str(settings.webhook_poll_interval_s),
        "HUB_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def stop_dispatchers(client, shards: int) -> None:
    for workflow_id in (RELAY_WORKFLOW_ID, *(shard_workflow_id(n) for n in range(shards))):
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(workflow_id).terminate("webhook crash test")


@pytest.fixture
async def two_workers(settings, temporal_env):
    """The relay and shards moved to a task queue only two `hub worker` processes poll (the tests'
    own worker stays out of it), with long rounds; put back afterwards."""
    moved = dataclasses.replace(
        settings, temporal_task_queue=f"crash-{uuid.uuid4().hex[:8]}", webhook_round_s=60
    )
    client = temporal_env.client
    await stop_dispatchers(client, settings.webhook_shards)
    workers = [worker_process(moved), worker_process(moved)]
    try:
        # Rounds of the terminated runs, still going in this process, learn of it from their next
        # heartbeat: after this they are gone and cannot deliver what the test is about.
        await asyncio.sleep(settings.webhook_heartbeat_timeout_s)
        await ensure_dispatchers(client, moved)
        yield moved, workers
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        await stop_dispatchers(client, settings.webhook_shards)
        await ensure_dispatchers(client, settings)


async def test_a_worker_killed_mid_round_loses_no_webhook(client, temporal_env, two_workers):
    moved, workers = two_workers
    tenant = await make_tenant()
    receiver = await Receiver(slow_s=0.2).start()
    try:
        response = await client.put(
            "/v1.0/customer", json={"webhook_uri": receiver.url}, headers=tenant.admin.headers
        )
        receiver.secrets.append(response.json()["webhook_secret"])
        identities = {f"{proc.pid}@{socket.gethostname()}": proc for proc in workers}

        async def worker_running_shard_zero():
            handle = temporal_env.client.get_workflow_handle(shard_workflow_id(0))
            for pending in (await handle.describe()).raw_description.pending_activities:
                if pending.last_worker_identity in identities:
                    return identities[pending.last_worker_identity]
            return None

        victim = await wait_for(worker_running_shard_zero, within=60)
        # Conversations whose deliveries shard 0 owns: 20 events each, 0.2 s per post (4 s of work).
        conversations = []
        while len(conversations) < 10:
            candidate = uuid.uuid4()
            if bucket_of(candidate) % moved.webhook_shards == 0:
                conversations.append(candidate)
        rows = [
            events.event_row(
                events.MESSAGE_UPDATED,
                tenant.customer_id,
                {"conversation_id": str(c), "n": n},
                conversation_id=c,
            )
            for n in range(20)
            for c in conversations
        ]
        async with transaction(current_engine()):
            await events.emit(*rows)

        await wait_for(lambda: asyncio.sleep(0, len(receiver.requests) >= 15), within=20, interval=0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert len(receiver.received) < len(rows), "killed while deliveries were under way"

        wanted = {str(r.id) for r in rows}
        await wait_for(lambda: asyncio.sleep(0, set(receiver.ids()) >= wanted), within=60)
        survivor = await wait_for(worker_running_shard_zero)
        assert survivor is not victim
    finally:
        await receiver.stop()

    assert receiver.bad_signatures == 0
    by_conversation: dict[str, list[int]] = defaultdict(list)
    for received in receiver.received:
        by_conversation[received.body["data"]["conversation_id"]].append(received.body["data"]["n"])
    for ns in by_conversation.values():
        # At most the post in flight at the kill is made again (same webhook-id); never out of order.
        assert ns == sorted(ns) and sorted(set(ns)) == list(range(20))
    delivered = await WebhookDelivery.count().where(
        WebhookDelivery.customer_id == tenant.customer_id, WebhookDelivery.status == "delivered"
    )
    assert delivered == len(rows)
