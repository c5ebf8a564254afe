"""/v1.0/flows (admin/manager write, every agent reads) and /v1.0/activeflows (runs of flows)."""

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from temporalio.client import WorkflowFailureError, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from api import temporal
from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import (
    ActiveflowPage,
    CapturedOut,
    FlowCreate,
    FlowDocumentTest,
    FlowPage,
    FlowTest,
    FlowTestOut,
    FlowUpdate,
    FlowVersionPage,
    given,
)
from hub import activeflows, dialogues, dryrun, flows
from hub.errors import BadRequest, Unavailable
from hub.models import ActiveflowOut, DialogueMessageOut, FlowOut, activeflow_out, flow_out, flow_version_out
from workflows.activeflow import ActiveflowState, DialogueReply

log = logging.getLogger("hub.api")

# A query waits for a worker to answer it: with none polling, the table's state answers instead.
LIVE_STATE_TIMEOUT = timedelta(seconds=2)


class FlowController(Controller):
    path = "/v1.0/flows"
    tags = ["flows"]

    @get("/")
    async def list_flows(
        self, caller: NamedDependency[Caller], page_size: PageSize = 100, page_token: PageToken = ""
    ) -> FlowPage:
        rows, token = await flows.list_flows(caller.customer_id, page_size, page_token)
        return FlowPage(result=[flow_out(r) for r in rows], next_page_token=token)

    @post("/", status_code=200, summary="Register a flow; actions are validated, errors name the action")
    async def create_flow(
        self, request: Request, caller: NamedDependency[Caller], data: JSONBody[FlowCreate]
    ) -> FlowOut:
        caller.require_admin_or_manager()
        rules = flows.FlowRules.of(request.app.state.settings)
        return flow_out(
            await flows.create_flow(caller.customer_id, data.name, data.detail, data.actions, rules)
        )

    @get("/{flow_id:str}")
    async def get_flow(self, caller: NamedDependency[Caller], flow_id: FromPath[UUID]) -> FlowOut:
        return flow_out(await flows.get_flow(caller.customer_id, flow_id))

    @get("/{flow_id:str}/versions", summary="Every action list the flow had, newest first")
    async def list_versions(
        self,
        caller: NamedDependency[Caller],
        flow_id: FromPath[UUID],
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> FlowVersionPage:
        rows, token = await flows.list_versions(caller.customer_id, flow_id, page_size, page_token)
        return FlowVersionPage(result=[flow_version_out(r) for r in rows], next_page_token=token)

    @put("/{flow_id:str}")
    async def update_flow(
        self,
        request: Request,
        caller: NamedDependency[Caller],
        flow_id: FromPath[UUID],
        data: JSONBody[FlowUpdate],
    ) -> FlowOut:
        caller.require_admin_or_manager()
        rules = flows.FlowRules.of(request.app.state.settings)
        return flow_out(await flows.update_flow(caller.customer_id, flow_id, given(data), rules))

    @post(
        "/{flow_id:str}/test",
        status_code=200,
        summary="Dry run of a stored flow: sends captured, waits take the given replies",
        description="Runs the flow's current version in a sandboxed activeflow: the same interpreter "
        "and validation, but messages, HTTP calls and conversation changes are captured instead of "
        "done, waits consume `replies` in order (then time out at once), sleeps do not wait. Answers "
        "the executed path, the captured side effects and the final variables; nothing is stored.",
    )
    async def test_flow(
        self,
        request: Request,
        caller: NamedDependency[Caller],
        flow_id: FromPath[UUID],
        data: JSONBody[FlowTest],
    ) -> FlowTestOut:
        caller.require_admin_or_manager()
        flow, actions = await dryrun.stored_plan(caller.customer_id, flow_id)
        return await _dry_run(request, caller, str(flow["id"]), actions, data)

    @post(
        "/test",
        status_code=200,
        summary="Dry run of an unsaved flow document (`actions`), validated as a save would be",
    )
    async def test_document(
        self, request: Request, caller: NamedDependency[Caller], data: JSONBody[FlowDocumentTest]
    ) -> FlowTestOut:
        caller.require_admin_or_manager()
        rules = flows.FlowRules.of(request.app.state.settings)
        actions = await dryrun.document_plan(caller.customer_id, data.actions, rules)
        return await _dry_run(request, caller, "", actions, data)

    @delete("/{flow_id:str}", status_code=200)
    async def delete_flow(self, caller: NamedDependency[Caller], flow_id: FromPath[UUID]) -> FlowOut:
        caller.require_admin_or_manager()
        return flow_out(await flows.delete_flow(caller.customer_id, flow_id))


class ActiveflowController(Controller):
    path = "/v1.0/activeflows"
    tags = ["activeflows"]

    @get("/")
    async def list_activeflows(
        self,
        caller: NamedDependency[Caller],
        conversation_id: Annotated[UUID | None, QueryParameter(name="conversation_id")] = None,
        status: Annotated[
            Literal[activeflows.STATUSES] | None,  # type: ignore[valid-type]
            QueryParameter(name="status", description="running, ended, failed or stopped"),
        ] = None,
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> ActiveflowPage:
        rows, token = await activeflows.list_activeflows(
            caller.customer_id, conversation_id, status, page_size, page_token
        )
        return ActiveflowPage(result=[activeflow_out(r) for r in rows], next_page_token=token)

    @get("/{activeflow_id:str}", summary="A run: status, current action, executed actions, variables")
    async def get_activeflow(
        self, request: Request, caller: NamedDependency[Caller], activeflow_id: FromPath[UUID]
    ) -> ActiveflowOut:
        row = await activeflows.get_activeflow(caller.customer_id, activeflow_id)
        out = activeflow_out(row)
        out.inbox = [DialogueMessageOut(**r) for r in await dialogues.inbox(activeflow_id)]
        if row["status"] == "running" and row["started"]:
            await _live_state(request, out)
        return out

    @post("/{activeflow_id:str}/stop", status_code=200, summary="Stop a running activeflow")
    async def stop_activeflow(
        self, request: Request, caller: NamedDependency[Caller], activeflow_id: FromPath[UUID]
    ) -> ActiveflowOut:
        caller.require_admin_or_manager()
        row = await activeflows.running_activeflow(caller.customer_id, activeflow_id)
        try:
            await request.app.state.temporal.get_workflow_handle(row["workflow_id"]).signal("stop")
        except RPCError as exc:
            if temporal.is_unavailable(exc):
                raise Unavailable("the flow engine is unavailable; the activeflow was not stopped") from exc
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise  # a bug, not an outage: a 500 with its traceback
            # Not started yet (recovery will not start a stopped run) or just over: nothing to tell.
            log.info("stop signal for %s not delivered: %s", row["workflow_id"], exc)
        return activeflow_out(await activeflows.mark_stopped(caller.customer_id, activeflow_id))


async def _dry_run(
    request: Request, caller: Caller, flow_id: str, actions: list, data: FlowTest
) -> FlowTestOut:
    run_id = uuid.uuid4()
    variables = dryrun.variables(flow_id, run_id, data.message.text, data.message.channel)
    replies = [
        DialogueReply(position=i + 1, text=r.text, channel=r.channel, media_urls=list(r.media_urls))
        for i, r in enumerate(data.replies)
    ]
    try:
        state = await temporal.dry_run(
            request.app.state.temporal,
            request.app.state.settings,
            caller.customer_id,
            flow_id,
            actions,
            variables,
            replies,
        )
    except WorkflowQueryFailedError as exc:
        # The run's final state is larger than Temporal carries (variables grown without bound).
        raise BadRequest(f"the dry run's result cannot be answered: {exc}") from exc
    except WorkflowFailureError as exc:
        # Its execution timeout: a worker took it, then did not finish it in time.
        raise Unavailable(f"the dry run did not finish: {exc.cause or exc}") from exc
    except Exception as exc:
        if isinstance(exc, RuntimeError | RPCError) and temporal.is_unavailable(exc):
            raise Unavailable("the flow engine is unavailable; retry the dry run") from exc
        raise
    return FlowTestOut(
        status=state.status,
        reason=state.reason,
        executed_actions=state.executed,
        captured_dropped=state.captured_dropped,
        captured=[CapturedOut(action_id=c.action_id, type=c.type, detail=c.detail) for c in state.captured],
        variables=state.variables,
    )


async def _live_state(request: Request, out: ActiveflowOut) -> None:
    """A running flow's progress lives in its workflow; ask it (the table has the final state)."""

    try:
        handle = request.app.state.temporal.get_workflow_handle(out.workflow_id)
        state = await handle.query("current", result_type=ActiveflowState, rpc_timeout=LIVE_STATE_TIMEOUT)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError, RuntimeError) as exc:
        # Over meanwhile, no worker (the query timed out), Temporal down: the table's state answers.
        if isinstance(exc, RuntimeError) and not temporal.is_unavailable(exc):
            raise
        log.info("activeflow %s not queryable now: %s", out.workflow_id, exc)
        return
    out.current_action_id = state.current_action_id
    out.executed_actions = state.executed
    out.variables = state.variables
    out.waiting = state.waiting
