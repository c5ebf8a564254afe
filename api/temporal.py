"""The Temporal side of the API and worker: client, search attributes, workflow starts."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.codec import data_converter
from hub import activeflows, dialogues, metrics
from hub.actions import MAX_EXECUTED_ACTIONS
from hub.errors import Unavailable
from hub.settings import Settings
from workflows.activeflow import (
    ActiveflowInput,
    ActiveflowState,
    ActiveflowWorkflow,
    DialogueReply,
    DryRun,
)
from workflows.send import SendInput, SendMessageWorkflow, send_workflow_id

log = logging.getLogger("hub.temporal")

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CONVERSATION_ID = SearchAttributeKey.for_keyword("ConversationId")
FLOW_ID = SearchAttributeKey.for_keyword("FlowId")
ACCOUNT_ID = SearchAttributeKey.for_keyword("AccountId")
SEARCH_ATTRIBUTES = (CUSTOMER_ID, CONVERSATION_ID, FLOW_ID, ACCOUNT_ID)


# Statuses meaning "Temporal cannot take this call now"; every other RPC error is a bug of ours.
UNAVAILABLE_STATUSES = (
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
)


def is_unavailable(exc: BaseException) -> bool:
    """Temporal is down, overloaded or unreachable (retry later), as opposed to a bug."""
    if isinstance(exc, RPCError):
        return exc.status in UNAVAILABLE_STATUSES
    # A lazy client that cannot connect raises a RuntimeError from its Rust core.
    if isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect"):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def search_attribute_flags() -> list[str]:
    """`temporal server start-dev` arguments registering the hub's search attributes."""
    return [arg for key in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}=Keyword")]


async def connect(settings: Settings, lazy: bool = False) -> Client:
    """A lazy client connects on first use, so the API starts (and answers) while Temporal is down."""
    return await Client.connect(
        settings.resolved_temporal_address,
        namespace=settings.temporal_namespace,
        lazy=lazy,
        data_converter=data_converter(settings.temporal_codec_key),
    )


def attributes(**values: Any) -> TypedSearchAttributes:
    keys = {"customer_id": CUSTOMER_ID, "conversation_id": CONVERSATION_ID, "flow_id": FLOW_ID}
    keys["account_id"] = ACCOUNT_ID
    return TypedSearchAttributes(
        [SearchAttributePair(keys[name], str(value)) for name, value in values.items() if value]
    )


def send_input(settings: Settings, message_id: str = "") -> SendInput:
    return SendInput(
        message_id=message_id,
        initial_retry_s=settings.send_retry_initial_s,
        max_retry_interval_s=settings.send_retry_max_interval_s,
        max_attempts=settings.send_max_attempts,
        attempt_timeout_s=settings.send_attempt_timeout_s,
    )


async def start_activeflow(
    client: Client, settings: Settings, row: dict[str, Any], record: bool = True
) -> None:
    """Starts the run's workflow (idempotent by workflow id) and records that it started (unless
    `record` is false: the caller records it, see api.controllers.hooks.start_flow)."""
    try:
        await client.start_workflow(
            ActiveflowWorkflow.run,
            ActiveflowInput(
                activeflow_id=str(row["id"]),
                flow_version=row["flow_version"],
                max_actions=MAX_EXECUTED_ACTIONS,
                send=send_input(settings),
            ),
            id=row["workflow_id"],
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=attributes(
                customer_id=row["customer_id"],
                conversation_id=row["conversation_id"],
                flow_id=row["flow_id"],
                account_id=row["account_id"],
            ),
            memo={"flow_name": row["flow_name"]},
            request_eager_start=True,
        )
    except WorkflowAlreadyStartedError:
        metrics.activeflow_start("duplicate")
    except Exception:
        metrics.activeflow_start("unavailable")
        raise
    else:
        metrics.activeflow_start("started")
    if record:
        await activeflows.mark_started(row["id"])


async def start_send(client: Client, settings: Settings, message: dict[str, Any]) -> None:
    """Starts `send-<message id>`; a start that already happened (retry, recovery) is a no-op."""
    try:
        await client.start_workflow(
            SendMessageWorkflow.run,
            send_input(settings, str(message["id"])),
            id=send_workflow_id(str(message["id"])),
            task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=attributes(
                customer_id=message["customer_id"],
                conversation_id=message["conversation_id"],
                account_id=message["account_id"],
            ),
        )
    except WorkflowAlreadyStartedError:
        pass


async def deliver_reply(client: Client, delivery: dict[str, Any]) -> bool:
    """Signals a message routed to a run in dialogue (`reply`) and records that it landed. A run
    that is over gets nothing (the message stays unconsumed). False when nothing was delivered."""
    payload = await dialogues.reply_of(delivery)
    if payload is None or not delivery.get("workflow_id"):
        await dialogues.mark_undeliverable(delivery["id"])
        return False
    try:
        await client.get_workflow_handle(delivery["workflow_id"]).signal(
            ActiveflowWorkflow.reply, DialogueReply(**payload)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        await dialogues.mark_undeliverable(delivery["id"])
        return False
    await dialogues.mark_delivered(delivery["id"])
    return True


DRY_RUN_TIMEOUT = timedelta(seconds=15)


def dry_run_task_queue(settings: Settings) -> str:
    """Dry runs have a task queue of their own, whose worker registers the activeflow workflow and
    no activity at all: a dry run cannot reach a database, a provider or a URL, whatever an
    action does (one that forgot the capture switch fails to schedule its activity)."""
    return f"{settings.temporal_task_queue}-dry-run"


async def has_workflow_pollers(client: Client, task_queue: str) -> bool:
    """Whether a worker polled the task queue for workflow tasks recently."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    return bool(answer.pollers)


async def dry_run(
    client: Client,
    settings: Settings,
    customer_id: Any,
    flow_id: str,
    actions: list[dict[str, Any]],
    variables: dict[str, str],
    replies: list[DialogueReply],
) -> ActiveflowState:
    """Runs a flow as a sandboxed activeflow (`dryrun-<id>`) on the worker, to its end, and
    answers its final state (path, captured side effects, variables). Nothing is stored."""
    run_id = variables["activeflow.id"]
    workflow_id = f"dryrun-{run_id}"
    if not await has_workflow_pollers(client, dry_run_task_queue(settings)):
        # Started anyway, the dry run would only time out: say so now.
        raise Unavailable("no worker is polling the flow engine's task queue; retry the dry run")
    await client.execute_workflow(
        ActiveflowWorkflow.run,
        ActiveflowInput(
            activeflow_id=run_id,
            max_actions=MAX_EXECUTED_ACTIONS,
            send=send_input(settings),
            customer_id=str(customer_id),
            flow_id=flow_id,
            actions=actions,
            variables=variables,
            dry_run=DryRun(replies=replies),
        ),
        id=workflow_id,
        task_queue=dry_run_task_queue(settings),
        execution_timeout=DRY_RUN_TIMEOUT,
        search_attributes=attributes(customer_id=customer_id, flow_id=flow_id),
        memo={"dry_run": True},
    )
    return await client.get_workflow_handle(workflow_id).query(
        ActiveflowWorkflow.current, result_type=ActiveflowState
    )
