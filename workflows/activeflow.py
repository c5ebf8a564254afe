"""ActiveflowWorkflow (`activeflow-<message id>`): a deterministic interpreter of a flow's actions.

Execution goes in list order unless a jump (branch, condition_variable, goto, next_id) says
otherwise; every I/O is an activity; at most `max_actions` actions run."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError
from temporalio.exceptions import TimeoutError as ActivityTimeout

from activities.inputs import (
    FailInput,
    FlowCloseInput,
    FlowConversationInput,
    FlowConversationResult,
    FlowFinishInput,
    FlowHttpInput,
    FlowHttpResult,
    FlowLoadInput,
    FlowPlan,
    FlowSendInput,
    FlowSendResult,
    FlowStartInput,
    FlowStartResult,
)
from workflows.send import SendInput

with workflow.unsafe.imports_passed_through():
    from hub import actions as flow_actions


@dataclass
class ActiveflowInput:
    """Ids only: the run's actions and variables are loaded by the `flow_load` activity, so no
    flow or message content travels in (or bloats) the workflow input."""

    activeflow_id: str = ""
    # The flow_versions row the run executes (0: a run from before flow versions).
    flow_version: int = 0
    max_actions: int = 1000
    send: SendInput = field(default_factory=SendInput)
    # Inputs started before flow versions carried the run itself; such runs still finish.
    customer_id: str = ""
    flow_id: str = ""
    conversation_id: str = ""
    account_id: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    # A sub-flow (flow_start): how many flow_start hops below the run a message started, and
    # that its result is an ActiveflowOutcome (a run a message started answers its status).
    depth: int = 0
    sub_flow: bool = False


@dataclass
class ActiveflowOutcome:
    """What a sub-flow answers its parent: how it ended and its final variables."""

    status: str = ""
    variables: dict[str, str] = field(default_factory=dict)


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
LOAD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["FlowInvalid"],
)
STOP = object()
# activeflows.workflow_id is a VARCHAR(128).
MAX_WORKFLOW_ID = 128
# A local activity's failure arrives as the activity's own error (or its timeout), an activity's
# wrapped in an ActivityError: a run handles them the same way.
ACTIVITY_FAILURES = (ActivityError, ApplicationError, ActivityTimeout)


def failure_cause(exc: BaseException) -> BaseException:
    return (exc.cause or exc) if isinstance(exc, ActivityError) else exc


@workflow.defn(name="Activeflow")
class ActiveflowWorkflow:
    def __init__(self) -> None:
        self.state = ActiveflowState()
        self.stop_requested = False
        self.data = ActiveflowInput()
        self.plan = FlowPlan()

    @workflow.signal
    def stop(self) -> None:
        self.stop_requested = True

    @workflow.query
    def current(self) -> ActiveflowState:
        return self.state

    @workflow.run
    async def run(self, data: ActiveflowInput) -> Any:
        self.data = data
        state = self.state
        try:
            self.plan = await self.load(data)
            steps = flow_actions.typed_steps(self.plan.actions)
        except (*ACTIVITY_FAILURES, ValueError, KeyError, TypeError) as exc:
            state.status = "failed"
            reason = f"the flow cannot run: {failure_cause(exc)}"
        else:
            state.variables = dict(self.plan.variables)
            reason = await self.interpret(steps)
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
        if data.sub_flow:
            return ActiveflowOutcome(status=state.status, variables=state.variables)
        return state.status

    async def load(self, data: ActiveflowInput) -> FlowPlan:
        if data.customer_id:  # started before flow versions: the input is the plan
            return FlowPlan(
                customer_id=data.customer_id,
                flow_id=data.flow_id,
                conversation_id=data.conversation_id,
                account_id=data.account_id,
                actions=data.actions,
                variables=data.variables,
            )
        return await workflow.execute_local_activity(
            "flow_load",
            FlowLoadInput(activeflow_id=data.activeflow_id, flow_version=data.flow_version),
            result_type=FlowPlan,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=LOAD_RETRY,
        )

    async def interpret(self, steps: list[flow_actions.Step]) -> str:
        """Runs the steps to the end, a stop or the safety cap; returns the reason of the outcome."""
        state = self.state
        max_actions = self.data.max_actions
        position = {step.id: i for i, step in enumerate(steps)}
        goto_jumps: dict[str, int] = {}
        pc = 0
        try:
            while pc < len(steps) and not self.stop_requested:
                if len(state.executed) >= max_actions:
                    state.status = "failed"
                    return f"stopped after {max_actions} executed actions (the safety cap)"
                step = steps[pc]
                state.current_action_id = step.id
                state.executed.append(step.id)
                workflow.set_current_details(f"action {step.id} ({step.type}), step {len(state.executed)}")
                jump = await self.execute(step, goto_jumps)
                if jump is STOP:
                    break
                if isinstance(jump, str):
                    pc = position[jump]
                elif step.next_id:
                    pc = position[step.next_id]
                else:
                    pc += 1
        except ACTIVITY_FAILURES as exc:
            state.status = "failed"
            return f"action {state.current_action_id}: {failure_cause(exc)}"
        if self.stop_requested:
            state.status = "stopped"
            return "stopped through the API"
        state.status = "ended"
        return ""

    async def execute(self, step: flow_actions.Step, goto_jumps: dict[str, int]) -> Any:
        """Runs one action; returns the id to jump to, STOP, or None to go on."""
        variables = self.state.variables
        match step.option:
            case flow_actions.ConversationSendOption(text=text):
                await self.send(FlowSendInput(conversation_id=self.plan.conversation_id, text=text))
            case flow_actions.MessageSendOption() as option:
                sent = await self.send(
                    FlowSendInput(
                        account_id=str(option.account_id),
                        destination=flow_actions.substitute(option.destination, variables),
                        text=option.text,
                        subject=flow_actions.substitute(option.subject, variables),
                    )
                )
                variables[f"{step.id}.conversation.id"] = sent.conversation_id
            case flow_actions.WebhookSendOption() as option:
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
            case flow_actions.FetchOption() as option:
                url = flow_actions.substitute(option.url, variables)
                result = await self.http(FlowHttpInput(url=url, answer_prefix=option.into), 10_000)
                variables[f"{option.into}.status_code"] = str(result.status_code)
                variables.update(result.variables)
            case flow_actions.VariableSetOption() as option:
                variables[option.name] = flow_actions.substitute(option.value, variables)
            case flow_actions.BranchOption() as option:
                value = variables.get(option.variable, "")
                return option.targets.get(value) or option.default_target_id
            case flow_actions.ConditionVariableOption() as option:
                value = variables.get(option.variable, "")
                if not flow_actions.compare(
                    value, option.operator, flow_actions.substitute(option.value, variables)
                ):
                    return option.false_target_id
            case flow_actions.GotoOption() as option:
                done = goto_jumps.get(step.id, 0)
                if done < option.loop_count:
                    goto_jumps[step.id] = done + 1
                    return option.target_id
            case flow_actions.SleepOption() as option:
                try:
                    await workflow.wait_condition(
                        lambda: self.stop_requested, timeout=timedelta(milliseconds=option.duration_ms)
                    )
                except TimeoutError:
                    pass
            case flow_actions.StopOption():
                return STOP
            case flow_actions.ConversationCloseOption() as option:
                await workflow.execute_activity(
                    "flow_close_conversation",
                    FlowCloseInput(
                        activeflow_id=self.data.activeflow_id,
                        customer_id=self.plan.customer_id,
                        conversation_id=self.plan.conversation_id,
                        note=flow_actions.substitute(option.reason, variables),
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=DB_RETRY,
                )
                variables["conversation.status"] = "closed"
            case (
                flow_actions.ConversationAssignOption()
                | flow_actions.ConversationUnassignOption()
                | flow_actions.ConversationTagOption()
            ):
                await self.handoff(step.option)
            case flow_actions.FlowStartOption() as option:
                await self.start_sub_flow(step, option)
        return None

    # --- handoff and sub-flow actions (issue 11) ---------------------------------------------

    async def handoff(self, option: Any) -> None:
        """conversation_assign / _unassign / _tag: one activity each, the API's operation."""
        request = FlowConversationInput(
            activeflow_id=self.data.activeflow_id,
            customer_id=self.plan.customer_id,
            conversation_id=self.plan.conversation_id,
        )
        match option:
            case flow_actions.ConversationAssignOption(agent_id=agent_id):
                request.agent_id = str(agent_id)
                activity = "flow_assign_conversation"
            case flow_actions.ConversationUnassignOption():
                activity = "flow_unassign_conversation"
            case _:
                request.add, request.remove = list(option.add), list(option.remove)
                activity = "flow_tag_conversation"
        result = await workflow.execute_activity(
            activity,
            request,
            result_type=FlowConversationResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        self.state.variables["conversation.owner_id"] = result.owner_id
        self.state.variables["conversation.tags"] = ",".join(result.tags)

    async def start_sub_flow(self, step: flow_actions.Step, option: flow_actions.FlowStartOption) -> None:
        """flow_start: the sub-flow runs as a child workflow (its own activeflow row, on this
        conversation); this run waits for it, then reads its final variables under `<id>.`. A stop
        of this run stops the sub-flow too."""
        data, variables = self.data, self.state.variables
        if data.depth >= flow_actions.MAX_FLOW_DEPTH:
            raise ApplicationError(
                f"sub-flows nest at most {flow_actions.MAX_FLOW_DEPTH} deep", type="FlowActionFailed"
            )
        number = len(self.state.executed)
        repeat = self.state.executed.count(step.id)
        own_id = self.plan.workflow_id or workflow.info().workflow_id
        workflow_id = f"{own_id}/{step.id}" + (f"#{repeat}" if repeat > 1 else "")
        activeflow_id = str(uuid.uuid5(uuid.UUID(data.activeflow_id), f"flow_start:{number}"))
        if len(workflow_id) > MAX_WORKFLOW_ID:  # deep chains of long action ids: the row's limit
            workflow_id = f"activeflow-{activeflow_id}"
        prepared = await workflow.execute_activity(
            "flow_start_prepare",
            FlowStartInput(
                parent_activeflow_id=data.activeflow_id,
                activeflow_id=activeflow_id,
                workflow_id=workflow_id,
                flow_id=str(option.flow_id),
                variables={k: flow_actions.substitute(v, variables) for k, v in option.variables.items()},
            ),
            result_type=FlowStartResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        child = await workflow.start_child_workflow(
            ActiveflowWorkflow.run,
            ActiveflowInput(
                activeflow_id=activeflow_id,
                flow_version=prepared.flow_version,
                max_actions=data.max_actions,
                send=data.send,
                depth=data.depth + 1,
                sub_flow=True,
            ),
            id=workflow_id,
            result_type=ActiveflowOutcome,
            search_attributes=self.sub_flow_attributes(str(option.flow_id)),
        )
        await workflow.wait_condition(lambda: child.done() or self.stop_requested)
        if not child.done():
            await child.signal("stop")
        try:
            answer = await child
            # Decoded as JSON (the run's annotation is not the outcome's type).
            outcome = ActiveflowOutcome(**answer) if isinstance(answer, dict) else answer
        except ChildWorkflowError as exc:  # terminated or timed out from outside the hub
            outcome = ActiveflowOutcome(status="failed", variables={})
            workflow.logger.warning("sub-flow %s did not finish: %s", workflow_id, exc.cause or exc)
        for name, value in outcome.variables.items():
            variables[f"{step.id}.{name}"] = value
        variables[f"{step.id}.activeflow.status"] = outcome.status

    def sub_flow_attributes(self, flow_id: str) -> TypedSearchAttributes | None:
        """The parent's search attributes (customer, conversation, account), with the sub-flow's id."""
        inherited = [p for p in workflow.info().typed_search_attributes if p.key.name != "FlowId"]
        if not inherited:
            return None
        return TypedSearchAttributes(
            [*inherited, SearchAttributePair(SearchAttributeKey.for_keyword("FlowId"), flow_id)]
        )

    async def send(self, request: FlowSendInput) -> FlowSendResult:
        """Stores and delivers one message; the flow goes on once the provider took it (or gave up)."""
        data = self.data
        request.activeflow_id = data.activeflow_id
        request.customer_id = self.plan.customer_id
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
        except ACTIVITY_FAILURES as exc:
            cause = failure_cause(exc)
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
