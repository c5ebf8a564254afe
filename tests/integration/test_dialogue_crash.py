"""A worker killed (SIGKILL) while a run waits for a reply: the reply still reaches the run, which
resumes on the next worker and answers exactly once."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import uuid

import pytest
from temporalio.service import RPCError, RPCStatusCode

from api import temporal as hub_temporal
from hub.tables import DialogueMessage
from tests.helpers import wait_for
from tests.integration.test_dialogue import wait
from tests.integration.test_flows import finished_run, inbound, outgoing_texts, reply, runs_of, setup_flow
from tests.integration.test_worker_crash import worker_process

# The relay and delivery shards run on the session's queue before a crash worker starts: a
# `hub worker` on another queue would start them there (and take them down when killed).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker", "dispatchers")]


async def test_a_waiting_run_survives_a_killed_worker_and_answers_once(
    client, settings, temporal_env, monkeypatch
):
    queue = f"dialogue-crash-{uuid.uuid4().hex[:8]}"
    crash_settings = dataclasses.replace(settings, temporal_task_queue=queue)
    tenant, _ = await setup_flow(
        client,
        [reply("Yes or no?", "ask"), wait("answer", "answer"), reply("answer: ${answer.text}", "said")],
    )

    # The run's row is committed by the inbound message; its workflow goes to the crash queue.
    async def not_now(*args, **kwargs):
        raise RPCError("injected: start it elsewhere", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", not_now)
    await inbound(client, tenant, "start")
    monkeypatch.undo()
    [row] = await runs_of(tenant)
    await hub_temporal.start_activeflow(temporal_env.client, crash_settings, row)

    first = worker_process(settings, queue)
    try:

        async def waiting():
            [run] = await runs_of(tenant)
            return run["in_dialogue"] and await outgoing_texts(tenant) == ["Yes or no?"]

        await wait_for(waiting, within=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()

    # The reply while no worker runs: stored, routed to the run, signalled to Temporal.
    response, _ = await inbound(client, tenant, "yes")
    assert response.status_code == 200
    [routed] = await DialogueMessage.select().where(DialogueMessage.activeflow_id == row["id"])
    assert routed["delivered"] is True and routed["state"] == "routed"

    second = worker_process(settings, queue)
    try:
        [done] = await finished_run(tenant, within=60)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=10)
        except subprocess.TimeoutExpired:
            second.kill()
    assert done["status"] == "ended", done["reason"]
    assert await outgoing_texts(tenant) == ["Yes or no?", "answer: yes"]
    assert len(await runs_of(tenant)) == 1
    [consumed] = await DialogueMessage.select().where(DialogueMessage.activeflow_id == row["id"])
    assert consumed["state"] == "consumed"
