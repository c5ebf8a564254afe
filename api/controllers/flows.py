"""/v1.0/flows (admin/manager write, every agent reads) and /v1.0/activeflows (runs of flows)."""

import logging
from datetime import timedelta
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from temporalio.client import WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError, RPCStatusCode

from api import temporal
from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import ActiveflowPage, FlowCreate, FlowPage, FlowUpdate, FlowVersionPage, given
from hub import activeflows, flows
from hub.errors import Unavailable
from hub.models import ActiveflowOut, FlowOut, activeflow_out, flow_out, flow_version_out
from workflows.activeflow import ActiveflowState

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
