"""The Temporal side of the API and worker: client, search attributes, workflow starts."""

from __future__ import annotations

import logging
from typing import Any

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
from hub import activeflows, metrics
from hub.actions import MAX_EXECUTED_ACTIONS
from hub.settings import Settings
from workflows.activeflow import ActiveflowInput, ActiveflowWorkflow
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
