"""Inputs and results of activities: plain dataclasses, safe to import from workflow code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeliverInput:
    message_id: str = ""


@dataclass
class DeliverResult:
    status: str = ""
    reason: str = ""
    provider_message_id: str = ""


@dataclass
class FailInput:
    message_id: str = ""
    reason: str = ""


@dataclass
class FlowLoadInput:
    activeflow_id: str = ""
    # 0: a run from before flow versions (its actions are stored in its own row).
    flow_version: int = 0


@dataclass
class FlowPlan:
    """What a run executes, loaded and validated by `flow_load` (kept out of workflow inputs)."""

    customer_id: str = ""
    flow_id: str = ""
    conversation_id: str = ""
    account_id: str = ""
    # Validated and normalised (hub.actions.parse_stored); hub.actions.typed_steps types them.
    actions: list[dict[str, Any]] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    # The run's workflow id as its row records it (sub-flows' workflow ids derive from it).
    workflow_id: str = ""


@dataclass
class FlowSendInput:
    """conversation_send (conversation_id) or message_send (account_id + destination)."""

    activeflow_id: str = ""
    customer_id: str = ""
    conversation_id: str = ""
    account_id: str = ""
    destination: str = ""
    text: str = ""
    # Decided by the workflow (deterministically), so a retried activity stores one message.
    message_id: str = ""
    step: int = 0
    # message_send from an email account: the subject ("": threads as a reply).
    subject: str = ""


@dataclass
class FlowCloseInput:
    """conversation_close: the run's conversation closes (reason `flow`); the run goes on."""

    activeflow_id: str = ""
    customer_id: str = ""
    conversation_id: str = ""
    note: str = ""


@dataclass
class FlowConversationInput:
    """conversation_assign / conversation_unassign / conversation_tag on the run's conversation:
    the same change (and events) as the API's, made as an admin would."""

    activeflow_id: str = ""
    customer_id: str = ""
    conversation_id: str = ""
    # conversation_assign: the new owner.
    agent_id: str = ""
    # conversation_tag.
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@dataclass
class FlowConversationResult:
    owner_id: str = ""
    tags: list[str] = field(default_factory=list)


@dataclass
class FlowStartInput:
    """flow_start: the sub-flow's activeflow row, written before its child workflow starts."""

    parent_activeflow_id: str = ""
    # Decided by the workflow (deterministically), so a retried activity writes one row.
    activeflow_id: str = ""
    workflow_id: str = ""
    flow_id: str = ""
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class FlowStartResult:
    flow_version: int = 0


@dataclass
class FlowSendResult:
    message_id: str = ""
    conversation_id: str = ""
    account_id: str = ""
    status: str = ""


@dataclass
class FlowHttpInput:
    method: str = "GET"
    url: str = ""
    body: dict[str, Any] | None = None
    timeout_ms: int = 5000
    # Read the JSON answer into variables under this prefix ("" = ignore the answer).
    answer_prefix: str = ""


@dataclass
class FlowHttpResult:
    status_code: int = 0
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class FlowFinishInput:
    activeflow_id: str = ""
    status: str = ""
    executed: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    current_action_id: str = ""
    reason: str = ""


@dataclass
class RelayInput:
    # How long this round takes events from the outbox before it returns to its workflow.
    round_s: float = 60.0
    batch_size: int = 1000


@dataclass
class RelayResult:
    relayed: int = 0


@dataclass
class DeliverShardInput:
    shard: int = 0
    shards: int = 1
    round_s: float = 60.0


@dataclass
class DeliverShardResult:
    delivered: int = 0
    failed: int = 0
    retried: int = 0


@dataclass
class InactivitySweepInput:
    batch_size: int = 500


@dataclass
class InactivitySweepResult:
    closed: int = 0


@dataclass
class DialogueEnterInput:
    activeflow_id: str = ""


@dataclass
class DialogueEnterResult:
    # The runs of the conversation that were in dialogue until now: the workflow tells them.
    superseded_workflow_ids: list[str] = field(default_factory=list)


@dataclass
class DialogueConsumedInput:
    activeflow_id: str = ""
    message_id: str = ""
