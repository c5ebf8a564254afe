"""Sends survive a worker killed with SIGKILL, and sends that never started are recovered."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import uuid

import pytest

from api import temporal
from api.worker import recover_sends
from hub import outbound
from hub.tables import Message
from tests.helpers import make_tenant, open_conversation, wait_for

# The relay and delivery shards must run on the session's queue before a crash worker starts:
# a `hub worker` on another queue starts them on its own queue (and takes them down when killed),
# and every later test would lose its webhooks and live events.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dispatchers")]


def worker_process(settings, queue: str) -> subprocess.Popen:
    """A `hub worker` on `queue`; its tests use the `dispatchers` fixture (see pytestmark)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_JWT_SECRET": settings.jwt_secret,
        # Several workers on one machine: no metrics port each (the default 9000 would clash).
        "HUB_WORKER_METRICS_PORT": "0",
        "HUB_TEMPORAL_ADDRESS": settings.temporal_address,
        "HUB_TEMPORAL_TASK_QUEUE": queue,
        "HUB_SMS_API_URL": settings.sms_api_url,
        "HUB_LINE_API_URL": settings.line_api_url,
        "HUB_PUBLIC_URL": settings.public_url,
        "HUB_RECOVERY_INTERVAL_S": "3600",
        "HUB_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def statuses(message_ids) -> list[str]:
    rows = await Message.select(Message.status).where(Message.id.is_in(message_ids))
    return [r["status"] for r in rows]


async def test_sigkilled_worker_loses_no_send(client, settings, temporal_env, fake_sms):
    queue = f"crash-{uuid.uuid4().hex[:8]}"
    crash_settings = dataclasses.replace(settings, temporal_task_queue=queue, send_attempt_timeout_s=3)
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    # The provider holds every request, so the kill lands while sends are surely in flight.
    fake_sms.control({"hold": True})
    messages = [
        (await outbound.create_outgoing(tenant.customer_id, conversation_id, f"crash {i}", []))[0]
        for i in range(10)
    ]
    ids = [m["id"] for m in messages]
    for message in messages:
        await temporal.start_send(temporal_env.client, crash_settings, message)

    first = worker_process(settings, queue)
    try:
        await wait_for(lambda: asyncio.sleep(0, result=fake_sms.in_flight >= 3), within=30)
        assert await statuses(ids) == ["progressing"] * 10
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The provider answers the requests of the dead worker (their answers go nowhere).
    fake_sms.control({"hold": False})

    second = worker_process(settings, queue)
    try:
        await wait_for(lambda: _all_settled(ids), within=60)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=10)
        except subprocess.TimeoutExpired:
            second.kill()
    assert await statuses(ids) == ["done"] * 10
    bodies = sorted(r["body"] for r in fake_sms.received)
    assert bodies == sorted(f"crash {i}" for i in range(10))


async def _all_settled(ids) -> bool:
    return all(s != "progressing" for s in await statuses(ids))


async def test_send_whose_workflow_never_started_is_recovered(
    client, settings, temporal_env, worker, fake_sms
):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    # As if the API crashed right after the commit: the message exists, no workflow does.
    message, _ = await outbound.create_outgoing(tenant.customer_id, conversation_id, "recover me", [])
    started = await recover_sends(temporal_env.client, settings, older_than_s=0)
    assert started >= 1
    await wait_for(lambda: _all_settled([message["id"]]))
    assert await statuses([message["id"]]) == ["done"]
    # A second recovery round does not send again.
    await recover_sends(temporal_env.client, settings, older_than_s=0)
    await asyncio.sleep(0.5)
    # Other tests may have left unsent messages that this recovery also started; ours went once.
    assert [r["body"] for r in fake_sms.received].count("recover me") == 1
