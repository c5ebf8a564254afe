"""ActiveflowWorkflow (`activeflow-<message id>`): a deterministic interpreter of a flow's actions.

Execution goes in list order unless a jump (branch, condition_variable, goto, next_id) says
otherwise; every I/O is an activity; at most `max_actions` actions run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from activities.inputs import (
    FailInput,
    FlowFinishInput,
    FlowHttpInput,
    FlowHttpResult,
    FlowSendInput,
    FlowSendResult,
)
from workflows.send import SendInput

with workflow.unsafe.imports_passed_through():
    import msgspec

    from hub import actions as flow_actions


@dataclass
class ActiveflowInput:
    activeflow_id: str = ""
    customer_id: str = ""
    flow_id: str = ""
    conversation_id: str = ""
    account_id: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    max_actions: int = 1000
    send: SendInput = field(default_factory=SendInput)


@dataclass
class ActiveflowState:
    status: str = "running"
    current_action_id: str = ""
    executed: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)


# Short database writes and provider sends run as local activities: no task-queue round trip
# per step (they are idempotent, so a re-execution after a worker crash is harmless).
# Flow I/O is user-pointed: a few quick retries, then the run fails with the reason.
IO_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
DB_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
STOP = object()


@workflow.defn(name="Activeflow")
class ActiveflowWorkflow:
    def __init__(self) -> None:
        self.state = ActiveflowState()
        self.stop_requested = False

    @workflow.signal
    def stop(self) -> None:
        self.stop_requested = True

    @workflow.query
    def current(self) -> ActiveflowState:
        return self.state

    @workflow.run
    async def run(self, data: ActiveflowInput) -> str:
        state = self.state
        state.variables = dict(data.variables)
        steps = [
            (a, msgspec.convert(a["option"], flow_actions.OPTION_TYPES[a["type"]])) for a in data.actions
        ]
        position = {a["id"]: i for i, (a, _) in enumerate(steps)}
        goto_jumps: dict[str, int] = {}
        reason = ""
        pc = 0
        try:
            while pc < len(steps) and not self.stop_requested:
                if len(state.executed) >= data.max_actions:
                    state.status = "failed"
                    reason = f"stopped after {data.max_actions} executed actions (the safety cap)"
                    break
                action, option = steps[pc]
                state.current_action_id = action["id"]
                state.executed.append(action["id"])
                workflow.set_current_details(
                    f"action {action['id']} ({action['type']}), step {len(state.executed)}"
                )
                jump = await self.execute(data, action, option, goto_jumps)
                if jump is STOP:
                    break
                if isinstance(jump, str):
                    pc = position[jump]
                elif action.get("next_id"):
                    pc = position[action["next_id"]]
                else:
                    pc += 1
            if self.stop_requested:
                state.status = "stopped"
                reason = "stopped through the API"
            elif state.status == "running":
                state.status = "ended"
        except (ActivityError, ApplicationError) as exc:
            # A local activity's non-retryable failure arrives as its ApplicationError itself.
            state.status = "failed"
            reason = f"action {state.current_action_id}: {exc.cause or exc}"
        await workflow.execute_local_activity(
            "flow_finish",
            FlowFinishInput(
                activeflow_id=data.activeflow_id,
                status=state.status,
                executed=state.executed,
                variables=state.variables,
                current_action_id=state.current_action_id,
                reason=reason,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        return state.status

    async def execute(
        self, data: ActiveflowInput, action: dict, option: Any, goto_jumps: dict[str, int]
    ) -> Any:
        """Runs one action; returns the id to jump to, STOP, or None to go on."""
        variables = self.state.variables
        kind = action["type"]
        if kind == "conversation_send":
            await self.send(data, FlowSendInput(conversation_id=data.conversation_id, text=option.text))
        elif kind == "message_send":
            sent = await self.send(
                data,
                FlowSendInput(
                    account_id=str(option.account_id),
                    destination=flow_actions.substitute(option.destination, variables),
                    text=option.text,
                ),
            )
            variables[f"{action['id']}.conversation.id"] = sent.conversation_id
        elif kind == "webhook_send":
            result = await self.http(
                FlowHttpInput(
                    method=option.method,
                    url=flow_actions.substitute(option.url, variables),
                    body=flow_actions.substitute_json(option.body, variables)
                    if option.body is not None
                    else None,
                    timeout_ms=option.timeout_ms,
                    answer_prefix="webhook.response" if option.wait_response else "",
                ),
                option.timeout_ms,
            )
            variables["webhook.status_code"] = str(result.status_code)
            variables.update(result.variables)
        elif kind == "fetch":
            result = await self.http(
                FlowHttpInput(url=flow_actions.substitute(option.url, variables), answer_prefix=option.into),
                10_000,
            )
            variables[f"{option.into}.status_code"] = str(result.status_code)
            variables.update(result.variables)
        elif kind == "variable_set":
            variables[option.name] = flow_actions.substitute(option.value, variables)
        elif kind == "branch":
            value = variables.get(option.variable, "")
            return option.targets.get(value) or option.default_target_id
        elif kind == "condition_variable":
            value = variables.get(option.variable, "")
            if not flow_actions.compare(
                value, option.operator, flow_actions.substitute(option.value, variables)
            ):
                return option.false_target_id
        elif kind == "goto":
            done = goto_jumps.get(action["id"], 0)
            if done < option.loop_count:
                goto_jumps[action["id"]] = done + 1
                return option.target_id
        elif kind == "sleep":
            try:
                await workflow.wait_condition(
                    lambda: self.stop_requested, timeout=timedelta(milliseconds=option.duration_ms)
                )
            except TimeoutError:
                pass
        elif kind == "stop":
            return STOP
        return None

    async def send(self, data: ActiveflowInput, request: FlowSendInput) -> FlowSendResult:
        """Stores and delivers one message; the flow goes on once the provider took it (or gave up)."""
        request.activeflow_id = data.activeflow_id
        request.customer_id = data.customer_id
        request.step = len(self.state.executed)
        # Deterministic, so the id survives replays and activity retries alike.
        request.message_id = str(uuid.uuid5(uuid.UUID(data.activeflow_id), str(request.step)))
        request.text = flow_actions.substitute(request.text, self.state.variables)
        retry = RetryPolicy(
            initial_interval=timedelta(seconds=data.send.initial_retry_s),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=data.send.max_retry_interval_s),
            maximum_attempts=data.send.max_attempts,
            non_retryable_error_types=["FlowActionFailed"],
        )
        try:
            return await workflow.execute_local_activity(
                "flow_send_message",
                request,
                result_type=FlowSendResult,
                start_to_close_timeout=timedelta(seconds=data.send.attempt_timeout_s),
                retry_policy=retry,
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "FlowActionFailed":
                raise
            # The provider stayed unavailable: the message fails, the flow goes on.
            reason = f"provider unavailable after {data.send.max_attempts} attempts: {cause or exc}"
            await workflow.execute_local_activity(
                "fail_message",
                FailInput(message_id=request.message_id, reason=reason[:1000]),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
            return FlowSendResult(message_id=request.message_id, status="failed")

    async def http(self, request: FlowHttpInput, timeout_ms: int) -> FlowHttpResult:
        return await workflow.execute_activity(
            "flow_http",
            request,
            result_type=FlowHttpResult,
            start_to_close_timeout=timedelta(milliseconds=timeout_ms + 5000),
            retry_policy=IO_RETRY,
        )
