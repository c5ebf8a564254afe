"""Flow actions: their options, validation on write, and the pure helpers the interpreter uses
(`${name}` substitution, JSON answers into variables, comparisons). No I/O: workflows import it.

No `from __future__ import annotations` here: msgspec would have to evaluate string annotations
inside the Temporal sandbox, where this module's globals are not visible."""

import re
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from hub.errors import BadRequest

MAX_ACTIONS_PER_FLOW = 500
# Safety cap of executed actions per activeflow (loops included).
MAX_EXECUTED_ACTIONS = 1000
# `\Z`: `$` would let a final newline through (api.openapi documents it as `$`).
ActionId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+\Z")]
Text = Annotated[str, Meta(max_length=5000)]
Url = Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^https?://")]
VariableName = Annotated[str, Meta(min_length=1, max_length=128)]


class ConversationSendOption(Struct, forbid_unknown_fields=True):
    text: Text


class MessageSendOption(Struct, forbid_unknown_fields=True):
    account_id: UUID
    # A phone number (SMS), a LINE chat id or an email address, as the account's channel takes;
    # `${name}` is substituted at run time (a literal one is checked when the flow is saved).
    destination: Annotated[str, Meta(min_length=1, max_length=254)]
    text: Text
    # Email accounts: the subject of the message ("": `Re:` the conversation's subject).
    subject: Annotated[str, Meta(max_length=200)] = ""


class WebhookSendOption(Struct, forbid_unknown_fields=True):
    url: Url
    method: Literal["POST", "PUT", "PATCH", "GET", "DELETE"] = "POST"
    body: dict[str, Any] | None = None
    wait_response: bool = False
    timeout_ms: Annotated[int, Meta(ge=100, le=30_000)] = 5000


class FetchOption(Struct, forbid_unknown_fields=True):
    url: Url
    into: VariableName


class VariableSetOption(Struct, forbid_unknown_fields=True):
    name: VariableName
    value: Annotated[str, Meta(max_length=5000)]


class BranchOption(Struct, forbid_unknown_fields=True):
    variable: VariableName
    targets: dict[str, ActionId]
    default_target_id: ActionId | None = None


class ConditionVariableOption(Struct, forbid_unknown_fields=True):
    variable: VariableName
    operator: Literal["==", "!=", "<", ">", "contains"]
    value: Annotated[str, Meta(max_length=5000)]
    false_target_id: ActionId


class GotoOption(Struct, forbid_unknown_fields=True):
    target_id: ActionId
    loop_count: Annotated[int, Meta(ge=0, le=MAX_EXECUTED_ACTIONS)]


class SleepOption(Struct, forbid_unknown_fields=True):
    duration_ms: Annotated[int, Meta(ge=0, le=30 * 24 * 3600 * 1000)]


class StopOption(Struct, forbid_unknown_fields=True):
    pass


class ConversationCloseOption(Struct, forbid_unknown_fields=True):
    # Why the flow closed it, kept as the conversation's `closed_note` (`closed_reason` is `flow`).
    reason: Annotated[str, Meta(max_length=200)] = ""


# --- handoff and sub-flow actions (issue 11) ----------------------------------------------------

# How deep `flow_start` may nest: a flow, its sub-flow, ... at most this many `flow_start` hops.
MAX_FLOW_DEPTH = 5
TagName = Annotated[str, Meta(min_length=1, max_length=50)]


class ConversationAssignOption(Struct, forbid_unknown_fields=True):
    # An agent of the flow's customer (checked when the flow is saved, and again when it runs).
    agent_id: UUID


class ConversationUnassignOption(Struct, forbid_unknown_fields=True):
    pass


class ConversationTagOption(Struct, forbid_unknown_fields=True):
    # Tags as the API takes them (hub.tags rules, checked when the flow is saved).
    add: Annotated[list[TagName], Meta(max_length=20)] = []
    remove: Annotated[list[TagName], Meta(max_length=20)] = []


class FlowStartOption(Struct, forbid_unknown_fields=True):
    # Another flow of the same customer, run as a child workflow; the run waits for it.
    flow_id: UUID
    # Extra variables of the sub-flow's run (`${name}` substituted from this run's variables).
    variables: Annotated[dict[VariableName, Annotated[str, Meta(max_length=5000)]], Meta(max_length=100)] = {}
class WaitForReplyOption(Struct, forbid_unknown_fields=True):
    """Waits for the next inbound message of the run's conversation (hub/dialogues.py):
    `<into>.text`, `.id`, `.channel`, `.medias.<n>.url`, `.timeout` ("true"/"false"/"superseded")."""

    timeout_ms: Annotated[int, Meta(ge=1, le=30 * 24 * 3600 * 1000)]
    into: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")] = "reply"


OPTION_TYPES: dict[str, type[Struct]] = {
    "conversation_send": ConversationSendOption,
    "message_send": MessageSendOption,
    "webhook_send": WebhookSendOption,
    "fetch": FetchOption,
    "variable_set": VariableSetOption,
    "branch": BranchOption,
    "condition_variable": ConditionVariableOption,
    "goto": GotoOption,
    "sleep": SleepOption,
    "stop": StopOption,
    "conversation_close": ConversationCloseOption,
    "conversation_assign": ConversationAssignOption,
    "conversation_unassign": ConversationUnassignOption,
    "conversation_tag": ConversationTagOption,
    "flow_start": FlowStartOption,
    "wait_for_reply": WaitForReplyOption,
}
ACTION_TYPES = tuple(OPTION_TYPES)


class ActionIn(Struct, kw_only=True):
    """An action as written by a flow designer; `option` is checked against `type` on write."""

    id: ActionId
    # A plain string (an unknown type is a 400 naming the action); the schema lists the types.
    type: Annotated[
        str,
        Meta(
            max_length=64,
            description="one of: " + ", ".join(ACTION_TYPES),
            extra_json_schema={"extra": {"enum": list(ACTION_TYPES)}},
        ),
    ]
    option: dict[str, Any] = {}
    next_id: ActionId | None = None


def jump_targets(action_type: str, option: Struct) -> list[str]:
    if isinstance(option, BranchOption):
        return [*option.targets.values(), *([option.default_target_id] if option.default_target_id else [])]
    if isinstance(option, ConditionVariableOption):
        return [option.false_target_id]
    if isinstance(option, GotoOption):
        return [option.target_id]
    return []


def validate_actions(actions: list[ActionIn]) -> list[dict[str, Any]]:
    """Checks every action and returns them normalised; errors name the offending action."""
    if len(actions) > MAX_ACTIONS_PER_FLOW:
        raise BadRequest(f"a flow has at most {MAX_ACTIONS_PER_FLOW} actions")
    ids = [a.id for a in actions]
    seen: set[str] = set()
    for action in actions:
        if action.id in seen:
            raise BadRequest(f"action {action.id!r}: duplicate action id")
        seen.add(action.id)
    normalised = []
    for action in actions:
        option_type = OPTION_TYPES.get(action.type)
        if option_type is None:
            raise BadRequest(
                f"action {action.id!r}: unknown type {action.type!r} (one of: {', '.join(ACTION_TYPES)})"
            )
        try:
            option = msgspec.convert(action.option, option_type)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"action {action.id!r} ({action.type}): bad option: {exc}") from exc
        for target in [*jump_targets(action.type, option), *([action.next_id] if action.next_id else [])]:
            if target not in ids:
                raise BadRequest(
                    f"action {action.id!r} ({action.type}): target {target!r} is not an action of this flow"
                )
        normalised.append(
            {
                "id": action.id,
                "type": action.type,
                "option": msgspec.to_builtins(option),
                "next_id": action.next_id,
            }
        )
    return normalised


# --- stored actions, typed for the interpreter --------------------------------------------------


class Step(Struct, frozen=True):
    """One action as the interpreter runs it: the option converted to its type."""

    id: str
    type: str
    option: Struct
    next_id: str | None = None


def parse_stored(raw: str) -> list[dict[str, Any]]:
    """Stored actions checked again before a run executes them (a row may predate a rule or have
    been written by hand): the normalised list, or BadRequest naming what is wrong."""
    try:
        actions = msgspec.json.decode(raw, type=list[ActionIn])
    except msgspec.ValidationError as exc:
        raise BadRequest(f"stored actions are malformed: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"stored actions are not JSON: {exc}") from exc
    return validate_actions(actions)


def typed_steps(actions: list[dict[str, Any]]) -> list[Step]:
    """Actions validated by `parse_stored` (or `validate_actions`) as typed steps. Pure, so the
    workflow may call it; raises ValueError, KeyError or TypeError on unvalidated input."""
    return [
        Step(
            id=a["id"],
            type=a["type"],
            option=msgspec.convert(a["option"], OPTION_TYPES[a["type"]]),
            next_id=a.get("next_id"),
        )
        for a in actions
    ]


# --- substitution (pure; also used inside workflows) ----------------------------------------

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def substitute(text: str, variables: dict[str, str]) -> str:
    """Replaces `${name}` with the variable's value; unknown names become ""."""
    return _PLACEHOLDER.sub(lambda m: variables.get(m.group(1).strip(), ""), text)


def substitute_json(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, variables)
    if isinstance(value, list):
        return [substitute_json(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute_json(v, variables) for k, v in value.items()}
    return value


def flatten(prefix: str, value: Any, into: dict[str, str], depth: int = 0) -> None:
    """JSON answers become variables: {"a": {"b": 1}} under "x" -> x.a.b = "1"."""
    if depth > 8 or len(into) > 500:
        return
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), item, into, depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            flatten(f"{prefix}.{i}", item, into, depth + 1)
    elif value is None:
        into[prefix] = ""
    elif isinstance(value, bool):
        into[prefix] = "true" if value else "false"
    else:
        into[prefix] = str(value)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def compare(left: str, operator: str, right: str) -> bool:
    """condition_variable: numbers compare as numbers when both sides are numeric."""
    if operator == "contains":
        return right in left
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        pair: tuple[Any, Any] = (a, b)
    else:
        pair = (left, right)
    if operator == "==":
        return pair[0] == pair[1]
    if operator == "!=":
        return pair[0] != pair[1]
    if operator == "<":
        return pair[0] < pair[1]
    if operator == ">":
        return pair[0] > pair[1]
    raise ValueError(f"unknown operator {operator!r}")
