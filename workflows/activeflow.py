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
    DialogueConsumedInput,
    DialogueEnterInput,
    DialogueEnterResult,
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
    import msgspec

    from hub import actions as flow_actions


@dataclass
class DialogueReply:
    """An inbound message routed to the run (signal `reply`): `position` is its place in the
    run's inbox (1, 2, 3... in commit order), so waits consume in that order whatever order the
    signals arrive in."""

    message_id: str = ""
    position: int = 0
    text: str = ""
    channel: str = ""
    media_urls: list[str] = field(default_factory=list)


@dataclass
class DryRun:
    """A sandboxed run (POST /flows/{id}/test): every side effect is captured, not done; waits
    consume `replies` in order, then time out at once; no row is read or written."""

    replies: list[DialogueReply] = field(default_factory=list)


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
    # Set: a dry run (the plan comes in the fields above, as for runs from before flow versions).
    dry_run: DryRun | None = None


@dataclass
class ActiveflowOutcome:
    """What a sub-flow answers its parent: how it ended and its final variables."""

    status: str = ""
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class CapturedEffect:
    """What a dry run's action would have done (a message, an HTTP call, a close...)."""

    action_id: str = ""
    type: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class ActiveflowState:
    status: str = "running"
    current_action_id: str = ""
    executed: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    # Dialogue: in it (since the first wait_for_reply, until superseded), waiting now, and the
    # inbox's message ids by what became of them.
    in_dialogue: bool = False
    waiting: bool = False
    consumed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    # Dry runs only: the side effects captured, and why the run ended as it did.
    captured: list[CapturedEffect] = field(default_factory=list)
    captured_dropped: int = 0  # beyond MAX_CAPTURED (a loop), counted only
    reason: str = ""


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
# A dry run's answer keeps the first side effects (an endless loop of sends stays answerable).
MAX_CAPTURED = 100
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
        # Dialogue inbox: routed messages by position, what was seen (a redelivery is ignored).
        self.inbox: dict[int, DialogueReply] = {}
        self.seen: set[str] = set()
        self.next_position = 1
        self.superseded = False

    @workflow.signal
    def stop(self) -> None:
        self.stop_requested = True

    @workflow.signal
    def reply(self, message: DialogueReply) -> None:
        if message.message_id in self.seen or message.position < self.next_position:
            return
        self.seen.add(message.message_id)
        self.inbox[message.position] = message
        self.state.pending.append(message.message_id)

    @workflow.signal
    def supersede(self) -> None:
        """Another run of the conversation entered a wait: this one's dialogue is over."""
        self.superseded = True

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
        if data.dry_run is not None:
            state.reason = reason
            return state.status  # nothing stored: the caller queries `current`
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
            case flow_actions.SleepOption() as option if self.captured(
                step.type, {"duration_ms": option.duration_ms}
            ):
                pass  # a dry run does not wait
            case flow_actions.SleepOption() as option:
                try:
                    await workflow.wait_condition(
                        lambda: self.stop_requested, timeout=timedelta(milliseconds=option.duration_ms)
                    )
                except TimeoutError:
                    pass
            case flow_actions.StopOption():
                return STOP
            case flow_actions.WaitForReplyOption() as option:
                await self.wait_for_reply(option)
            case flow_actions.ConversationCloseOption() as option if self.captured(
                step.type, {"reason": flow_actions.substitute(option.reason, variables)}
            ):
                variables["conversation.status"] = "closed"
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
            ) as option if self.captured(step.type, msgspec.to_builtins(option)):
                self.pretend_handoff(option)
            case (
                flow_actions.ConversationAssignOption()
                | flow_actions.ConversationUnassignOption()
                | flow_actions.ConversationTagOption()
            ):
                await self.handoff(step.option)
            case flow_actions.FlowStartOption() as option if self.captured(
                step.type,
                {
                    "flow_id": str(option.flow_id),
                    "variables": {k: flow_actions.substitute(v, variables) for k, v in option.variables.items()},  # noqa: E501
                },
            ):
                # A dry run does not run the sub-flow (it would need its own plan): it is captured.
                variables[f"{step.id}.activeflow.status"] = "captured"
            case flow_actions.FlowStartOption() as option:
                await self.start_sub_flow(step, option)
        return None

    # --- handoff and sub-flow actions (issue 11) ---------------------------------------------

    def pretend_handoff(self, option: Any) -> None:
        """A dry run's handoff: the variables the real action would leave (tags from those the
        run already knows, as the conversation is not read)."""
        variables = self.state.variables
        match option:
            case flow_actions.ConversationAssignOption(agent_id=agent_id):
                variables["conversation.owner_id"] = str(agent_id)
            case flow_actions.ConversationUnassignOption():
                variables["conversation.owner_id"] = str(uuid.UUID(int=0))
            case _:
                known = [t for t in variables.get("conversation.tags", "").split(",") if t]
                removed = {t.lower() for t in option.remove}
                tags = [t for t in known if t not in removed]
                tags += [t.lower() for t in option.add if t.lower() not in tags and t.lower() not in removed]
                variables["conversation.tags"] = ",".join(tags)

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
    def captured(self, kind: str, detail: dict[str, Any]) -> bool:
        """THE dry-run switch: in a dry run, records what the current action would do (`kind`:
        message, http, or the action's type) and says True, so the caller skips the side effect;
        in a real run, False. Every side-effecting action asks it before its activity."""
        if self.data.dry_run is None:
            return False
        if len(self.state.captured) < MAX_CAPTURED:
            effect = CapturedEffect(action_id=self.state.current_action_id, type=kind, detail=detail)
            self.state.captured.append(effect)
        else:
            self.state.captured_dropped += 1
        return True

    async def wait_for_reply(self, option: flow_actions.WaitForReplyOption) -> None:
        """Waits for the next message of the run's inbox: the oldest unconsumed one, in commit
        order. `<into>.timeout` is "true", "false" or "superseded" (another run took the dialogue)."""
        into, variables, state = option.into, self.state.variables, self.state
        reply: DialogueReply | None = None
        outcome = "true"
        if self.data.dry_run is not None:
            replies = self.data.dry_run.replies
            if self.next_position <= len(replies):
                reply = replies[self.next_position - 1]
                reply.message_id = reply.message_id or f"dry-run-reply-{self.next_position}"
                self.next_position += 1
        else:
            entered = await workflow.execute_local_activity(
                "flow_dialogue_enter",
                DialogueEnterInput(activeflow_id=self.data.activeflow_id),
                result_type=DialogueEnterResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
            for workflow_id in entered.superseded_workflow_ids:
                # A run just over does not take the signal: nothing to tell it.
                try:
                    await workflow.get_external_workflow_handle(workflow_id).signal("supersede")
                except Exception:  # noqa: BLE001 - whatever the failure, the new dialogue goes on
                    workflow.logger.info("run %s not told it was superseded", workflow_id)
            self.superseded = False
            state.in_dialogue = True
            state.waiting = True
            workflow.set_current_details(f"waiting for a reply ({into}), action {state.current_action_id}")
            try:
                await workflow.wait_condition(
                    lambda: self.next_position in self.inbox or self.superseded or self.stop_requested,
                    timeout=timedelta(milliseconds=option.timeout_ms),
                )
            except TimeoutError:
                pass
            state.waiting = False
            if self.next_position in self.inbox:
                reply = self.inbox.pop(self.next_position)
                self.next_position += 1
                state.pending.remove(reply.message_id)
                state.consumed.append(reply.message_id)
                await workflow.execute_local_activity(
                    "flow_dialogue_consumed",
                    DialogueConsumedInput(activeflow_id=self.data.activeflow_id, message_id=reply.message_id),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=DB_RETRY,
                )
            elif self.superseded:
                outcome = "superseded"
                state.in_dialogue = False
        for key in [k for k in variables if k.startswith(f"{into}.medias.")]:
            del variables[key]
        if reply is None:
            variables.update({f"{into}.text": "", f"{into}.id": "", f"{into}.channel": ""})
        else:
            outcome = "false"
            variables[f"{into}.text"] = reply.text
            variables[f"{into}.id"] = reply.message_id
            variables[f"{into}.channel"] = reply.channel or variables.get("message.channel", "")
            for i, url in enumerate(reply.media_urls):
                variables[f"{into}.medias.{i}.url"] = url
        variables[f"{into}.timeout"] = outcome

    async def send(self, request: FlowSendInput) -> FlowSendResult:
        """Stores and delivers one message; the flow goes on once the provider took it (or gave up)."""
        data = self.data
        request.text = flow_actions.substitute(request.text, self.state.variables)
        if data.dry_run is not None:
            detail = {
                "text": request.text,
                "account_id": request.account_id,
                "destination": request.destination,
                "subject": request.subject,
            }
            self.captured("message", {k: v for k, v in detail.items() if v})
            return FlowSendResult(status="captured", conversation_id=request.conversation_id)
        request.activeflow_id = data.activeflow_id
        request.customer_id = self.plan.customer_id
        request.step = len(self.state.executed)
        # Deterministic, so the id survives replays and activity retries alike.
        request.message_id = str(uuid.uuid5(uuid.UUID(data.activeflow_id), str(request.step)))
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
        if self.data.dry_run is not None:
            self.captured("http", {"method": request.method, "url": request.url, "body": request.body})
            return FlowHttpResult(status_code=0)
        return await workflow.execute_activity(
            "flow_http",
            request,
            result_type=FlowHttpResult,
            start_to_close_timeout=timedelta(milliseconds=timeout_ms + 5000),
            retry_policy=IO_RETRY,
        )
