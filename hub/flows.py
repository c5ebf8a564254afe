"""Flows: storage of user-defined action lists, and the account references to them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec

from hub import netguard
from hub.actions import MAX_FLOW_DEPTH, ActionIn, validate_actions
from hub.addresses import Address
from hub.db import current_engine, transaction
from hub.errors import BadRequest, HubError
from hub.pagination import check_page_size, fetch_page
from hub.participants import ADDRESS_TYPE_OF_ACCOUNT, normalized_address
from hub.repo import get_scoped, now, soft_delete
from hub.settings import Settings
from hub.strict import refuse_nul
from hub.tables import Account, Agent, Flow, FlowVersion
from hub.tags import normalize_tag, normalize_tags

HTTP_ACTIONS = ("webhook_send", "fetch")


@dataclass(frozen=True)
class FlowRules:
    """What a stored flow may contain beyond its actions' own validation (from the settings)."""

    allow_private_targets: bool = False
    max_bytes: int = 256 * 1024

    @classmethod
    def of(cls, settings: Settings) -> FlowRules:
        return cls(settings.webhook_allow_private, settings.flow_max_bytes)


def encode_actions(actions: list[ActionIn], rules: FlowRules) -> tuple[str, list[dict[str, Any]]]:
    """The validated actions as stored (JSON) and as a list; 400 naming the action otherwise."""
    normalised = validate_actions(actions)
    for action in normalised:
        refuse_nul(action, f"action {action['id']!r}")
        if action["type"] in HTTP_ACTIONS:
            try:
                netguard.check_literal_target(
                    action["option"]["url"], rules.allow_private_targets, template=True
                )
            except netguard.TargetRefused as exc:
                raise BadRequest(f"action {action['id']!r} ({action['type']}): url refused: {exc}") from exc
        if action["type"] == "conversation_tag":
            _normalise_tag_option(action)
    encoded = msgspec.json.encode(normalised)
    if len(encoded) > rules.max_bytes:
        raise BadRequest(
            f"the flow's actions take {len(encoded)} bytes encoded; at most {rules.max_bytes} "
            f"({rules.max_bytes / 1024:.0f} KiB) are allowed (HUB_FLOW_MAX_BYTES)"
        )
    return encoded.decode(), normalised


def _normalise_tag_option(action: dict[str, Any]) -> None:
    """conversation_tag: the tags as the API stores them (lowercased, checked, deduplicated)."""
    option = action["option"]
    try:
        option["add"] = normalize_tags(option["add"])
        option["remove"] = list(dict.fromkeys(normalize_tag(t) for t in option["remove"]))
    except HubError as exc:
        raise BadRequest(f"action {action['id']!r} (conversation_tag): {exc.message}") from exc
    if not option["add"] and not option["remove"]:
        raise BadRequest(f"action {action['id']!r} (conversation_tag): add or remove must name a tag")


async def check_references(customer_id: UUID, actions: list[dict[str, Any]], flow_id: UUID) -> None:
    """What the actions name must be the customer's: accounts (and destinations they can reach),
    agents, and sub-flows (no cycle, at most MAX_FLOW_DEPTH deep). 400 naming the action."""
    await check_accounts(customer_id, actions)
    await check_agents(customer_id, actions)
    await check_sub_flows(customer_id, actions, flow_id)


async def check_agents(customer_id: UUID, actions: list[dict[str, Any]]) -> None:
    """conversation_assign must name a live agent of the customer (like the API's owner_id:
    unknown and another customer's agent answer alike)."""
    wanted = {a["id"]: UUID(a["option"]["agent_id"]) for a in actions if a["type"] == "conversation_assign"}
    if not wanted:
        return
    live = await (
        Agent.select(Agent.id)
        .where(
            Agent.id.is_in(list(set(wanted.values()))),
            Agent.customer_id == customer_id,
            Agent.tm_delete.is_null(),
        )
        .output(as_list=True)
    )
    live_ids = {str(i) for i in live}
    for action_id, agent_id in wanted.items():
        if str(agent_id) not in live_ids:
            raise BadRequest(
                f"action {action_id!r} (conversation_assign): agent_id is not an agent of this customer"
            )


def _flow_starts(actions: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(action id, sub-flow id) of each flow_start action."""
    return [(a["id"], str(a["option"]["flow_id"])) for a in actions if a.get("type") == "flow_start"]


async def check_sub_flows(customer_id: UUID, actions: list[dict[str, Any]], flow_id: UUID) -> None:
    """flow_start must name a live flow of the customer; the flows calling each other must form
    no cycle, and no chain of flow_start calls through this flow may be deeper than
    MAX_FLOW_DEPTH (counting the flows that call this one too)."""
    mine = _flow_starts(actions)
    if not mine:
        return
    rows = await Flow.select(Flow.id, Flow.name, Flow.actions).where(
        Flow.customer_id == customer_id, Flow.tm_delete.is_null()
    )
    names = {str(r["id"]): r["name"] for r in rows}
    calls: dict[str, list[str]] = {}
    for row in rows:
        try:
            calls[str(row["id"])] = [c for _, c in _flow_starts(msgspec.json.decode(row["actions"]))]
        except (msgspec.DecodeError, TypeError, KeyError, AttributeError):
            calls[str(row["id"])] = []
    me = str(flow_id)
    names.setdefault(me, "this flow")
    calls[me] = [c for _, c in mine]

    def label(chain: list[str]) -> str:
        return " -> ".join(f"{names.get(f, '?')!r} ({f})" for f in chain)

    for action_id, child in mine:
        if child not in calls:
            raise BadRequest(f"action {action_id!r} (flow_start): flow_id is not a flow of this customer")
        cycle = _path_to(calls, child, me, [me, child])
        if cycle:
            raise BadRequest(
                f"action {action_id!r} (flow_start): the flows would start each other in a cycle: "
                f"{label(cycle)}"
            )
    callers: dict[str, list[str]] = {}
    for caller, children in calls.items():
        for child in children:
            callers.setdefault(child, []).append(caller)
    above = _longest(callers, me, set())  # [me, its caller, that one's caller, ...]
    for action_id, child in mine:
        chain = [*reversed(above), *_longest(calls, child, {me})]
        if len(chain) - 1 > MAX_FLOW_DEPTH:
            raise BadRequest(
                f"action {action_id!r} (flow_start): sub-flows would nest {len(chain) - 1} deep "
                f"(at most {MAX_FLOW_DEPTH}): {label(chain)}"
            )


def _path_to(graph: dict[str, list[str]], start: str, goal: str, path: list[str]) -> list[str] | None:
    """A path from `start` (already last in `path`) to `goal`, or None."""
    if start == goal:
        return path
    seen: set[str] = set()
    stack = [(start, path)]
    while stack:
        node, trail = stack.pop()
        for nxt in graph.get(node, []):
            if nxt == goal:
                return [*trail, nxt]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return None


def _longest(
    graph: dict[str, list[str]],
    start: str,
    avoid: set[str],
    memo: dict[str, list[str]] | None = None,
    stack: set[str] | None = None,
) -> list[str]:
    """The longest chain of nodes from `start` along `graph`, skipping `avoid` (each node once:
    memoised, so many paths through the same flows stay cheap; the stack guards against a cycle
    written around the checks)."""
    memo = {} if memo is None else memo
    stack = set() if stack is None else stack
    if start in memo:
        return memo[start]
    stack.add(start)
    best: list[str] = [start]
    for nxt in graph.get(start, []):
        if nxt in avoid or nxt in stack:
            continue
        tail = _longest(graph, nxt, avoid, memo, stack)
        if 1 + len(tail) > len(best):
            best = [start, *tail]
    stack.discard(start)
    memo[start] = best
    return best


async def check_accounts(customer_id: UUID, actions: list[dict[str, Any]]) -> None:
    """message_send actions must name live accounts of the customer (one query for all), and a
    literal destination must be an address the account's channel reaches."""
    wanted = {a["id"]: UUID(a["option"]["account_id"]) for a in actions if a["type"] == "message_send"}
    if not wanted:
        return
    live = await Account.select(Account.id, Account.type).where(
        Account.id.is_in(list(set(wanted.values()))),
        Account.customer_id == customer_id,
        Account.tm_delete.is_null(),
    )
    types = {str(r["id"]): r["type"] for r in live}
    for action in actions:
        if action["type"] != "message_send":
            continue
        account_type = types.get(str(action["option"]["account_id"]))
        if account_type is None:
            raise BadRequest(
                f"action {action['id']!r} (message_send): account_id is not an account of this customer"
            )
        _check_destination(action, account_type)


def _check_destination(action: dict[str, Any], account_type: str) -> None:
    """A literal destination is checked (and normalised) for the account's channel; one with
    `${...}` is checked when the run substitutes it (the stored one stays as written). `subject`
    is for email accounts only."""
    option = action["option"]
    if option.get("subject") and account_type != "email":
        raise BadRequest(
            f"action {action['id']!r} (message_send): subject is for email accounts; "
            f"this one is {account_type}"
        )
    destination = option["destination"]
    if "${" in destination:
        return
    address_type = ADDRESS_TYPE_OF_ACCOUNT.get(account_type, "")
    try:
        normalized_address(Address(type=address_type, target=destination))
    except HubError as exc:
        raise BadRequest(
            f"action {action['id']!r} (message_send): destination {destination[:64]!r} is not "
            f"an address a {account_type} account reaches"
        ) from exc


def flow_view(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "actions": msgspec.json.decode(row["actions"])}


async def create_flow(
    customer_id: UUID, name: str, detail: str, actions: list[ActionIn], rules: FlowRules = FlowRules()
) -> dict[str, Any]:
    refuse_nul({"name": name, "detail": detail})
    flow_id = uuid.uuid4()
    encoded, normalised = encode_actions(actions, rules)
    await check_references(customer_id, normalised, flow_id)
    flow = Flow(id=flow_id, customer_id=customer_id, name=name, detail=detail, actions=encoded, version=1)
    async with transaction(current_engine()):
        await Flow.insert(flow)
        await FlowVersion.insert(FlowVersion(flow_id=flow.id, version=1, actions=encoded))
    return flow_view(await get_scoped(Flow, customer_id, flow.id))


async def get_flow(customer_id: UUID, flow_id: UUID) -> dict[str, Any]:
    return flow_view(await get_scoped(Flow, customer_id, flow_id))


async def list_flows(customer_id: UUID, page_size: int, page_token: str):
    rows, token = await fetch_page(
        Flow, [Flow.customer_id == customer_id, Flow.tm_delete.is_null()], page_size, page_token
    )
    return [flow_view(r) for r in rows], token


async def update_flow(
    customer_id: UUID, flow_id: UUID, values: dict[str, Any], rules: FlowRules = FlowRules()
) -> dict[str, Any]:
    await get_scoped(Flow, customer_id, flow_id)
    refuse_nul({k: v for k, v in values.items() if k in ("name", "detail")})
    changes: dict[Any, Any] = {}
    if "name" in values:
        changes[Flow.name] = values["name"]
    if "detail" in values:
        changes[Flow.detail] = values["detail"]
    encoded = None
    if "actions" in values:
        encoded, normalised = encode_actions(values["actions"], rules)
        await check_references(customer_id, normalised, flow_id)
        changes[Flow.actions] = encoded
        changes[Flow.version] = Flow.version + 1
    if changes:
        changes[Flow.tm_update] = now()
        # The update locks the row, so concurrent edits get consecutive versions.
        async with transaction(current_engine()):
            await Flow.update(changes).where(Flow.id == flow_id)
            if encoded is not None:
                version = await Flow.select(Flow.version).where(Flow.id == flow_id).first()
                await FlowVersion.insert(
                    FlowVersion(flow_id=flow_id, version=version["version"], actions=encoded)
                )
    return await get_flow(customer_id, flow_id)


async def flow_version_actions(flow_id: UUID, version: int) -> str | None:
    """The stored (JSON) action list of one version of a flow, None when there is no such version."""
    row = await (
        FlowVersion.select(FlowVersion.actions)
        .where(FlowVersion.flow_id == flow_id, FlowVersion.version == version)
        .first()
    )
    return row["actions"] if row else None


async def list_versions(
    customer_id: UUID, flow_id: UUID, page_size: int, page_token: str
) -> tuple[list[dict[str, Any]], str]:
    """Every action list the flow had, newest first; the token is the version the next page
    continues below. Another customer's flow (or a deleted one) is a 404."""
    page_size = check_page_size(page_size)
    await get_scoped(Flow, customer_id, flow_id)
    query = FlowVersion.select(
        FlowVersion.flow_id, FlowVersion.version, FlowVersion.actions, FlowVersion.tm_create
    )
    conditions = [FlowVersion.flow_id == flow_id]
    if page_token:
        if not page_token.isascii() or not page_token.isdigit() or len(page_token) > 9:
            raise BadRequest("page_token is not a next_page_token of this list")
        conditions.append(FlowVersion.version < int(page_token))
    rows = await query.where(*conditions).order_by(FlowVersion.version, ascending=False).limit(page_size + 1)
    token = ""
    if len(rows) > page_size:
        rows = rows[:page_size]
        token = str(rows[-1]["version"])
    return [{**r, "actions": msgspec.json.decode(r["actions"])} for r in rows], token


async def delete_flow(customer_id: UUID, flow_id: UUID) -> dict[str, Any]:
    return flow_view(await soft_delete(Flow, customer_id, flow_id))


async def live_flow(customer_id: UUID, flow_id: UUID | None) -> dict[str, Any] | None:
    if flow_id is None:
        return None
    return (
        await Flow.select()
        .where(Flow.id == flow_id, Flow.customer_id == customer_id, Flow.tm_delete.is_null())
        .first()
    )


async def check_flow_reference(customer_id: UUID, flow_id: UUID | None) -> None:
    """An account's message_flow_id must name a live flow of the same customer."""
    if flow_id is not None and await live_flow(customer_id, flow_id) is None:
        raise BadRequest("message_flow_id is not a flow of this customer")


async def find_flow(customer_id: UUID, flow_id: str | None, name: str) -> dict[str, Any] | None:
    """A live flow of the customer by id (when given) or else by name."""
    query = Flow.select().where(Flow.customer_id == customer_id, Flow.tm_delete.is_null())
    if flow_id:
        try:
            return await query.where(Flow.id == UUID(str(flow_id))).first()
        except ValueError as exc:
            raise BadRequest(f"id {flow_id!r} is not a UUID") from exc
    return await query.where(Flow.name == name).order_by(Flow.tm_create).first()
