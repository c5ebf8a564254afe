"""POST /v1.0/hooks/accounts/{id}: provider webhooks, authenticated by the provider's signature.

A thin dispatcher: the account's channel (hub/channels/) checks the signature and parses the
body; this stores what it parsed, applies delivery reports and starts the flows."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from uuid import UUID

from litestar import Controller, Request, Response, post
from litestar.params import FromPath

from activities.providers import lookup_name
from api import logs, temporal
from api.errors import BAD_INPUT_ERRORS
from api.strict import MULTIPART_FILES, strict_input
from hub import accounts, activeflows, channels, inbound, metrics, outbound
from hub.channels import email
from hub.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized, Unavailable
from hub.settings import Settings

log = logging.getLogger("hub.hooks")

# What a provider hook may post: Litestar's default (10 MB) unless the channel says more (email).
DEFAULT_MAX_BODY = 10_000_000
MAX_HOOK_BODY = max(DEFAULT_MAX_BODY, email.MAX_BODY_BYTES)


async def start_flow(request: Request, result: inbound.InboundResult) -> None:
    """Starts the activeflow the message triggered. If Temporal cannot take it now, answer 503:
    the message is stored, and the provider's retry (a duplicate) tries the start again; the
    worker's recovery starts it in any case."""
    if result.dialogue is not None:
        await deliver_reply(request, result)
    if result.activeflow is None:
        return
    try:
        await temporal.start_activeflow(
            request.app.state.temporal, request.app.state.settings, result.activeflow, record=False
        )
    except Exception as exc:
        if not temporal.is_unavailable(exc):
            raise  # a bug, not an outage: a 500 with its traceback (database outages answer 503 there)
        log.warning("activeflow %s not started now: %s", result.activeflow["id"], exc, exc_info=exc)
        raise Unavailable("the flow engine is unavailable; retry") from exc
    record_started(result.activeflow["id"])


# The `started` flags being written after their answers went out (held so they are not collected).
_recording: set[asyncio.Task] = set()


def record_started(activeflow_id) -> None:
    """Marks the run started off the request path: the provider's answer waits for the workflow
    start only. If this write is lost (a crash, the database gone meanwhile), the worker's
    recovery starts the run again, Temporal answers "already started", and recovery marks it."""

    async def record() -> None:
        try:
            await activeflows.mark_started(activeflow_id)
        except Exception as exc:
            log.warning("activeflow %s started; its flag is left to recovery: %s", activeflow_id, exc)

    task = asyncio.get_running_loop().create_task(record())
    _recording.add(task)
    task.add_done_callback(_recording.discard)


async def finish_recording() -> None:
    """Waits for the `started` writes still under way (the app's shutdown, before the pool closes)."""
    if _recording:
        await asyncio.gather(*list(_recording), return_exceptions=True)


async def deliver_reply(request: Request, result: inbound.InboundResult) -> None:
    """The message went to a run in dialogue: signal it now. It is stored and routed, so if
    Temporal cannot take the signal the worker's recovery delivers it (no 503)."""
    try:
        await temporal.deliver_reply(request.app.state.temporal, result.dialogue)
    except Exception as exc:
        # Committed already: whatever went wrong, recovery re-signals it (a bug is logged loudly).
        if temporal.is_unavailable(exc):
            log.warning("dialogue message %s not delivered now: %s", result.message["id"], exc)
        else:
            log.exception("dialogue message %s not delivered", result.message["id"])


def count_inbound(channel: str, result: inbound.InboundResult) -> None:
    outcome = "duplicate" if result.duplicate else "stored"
    metrics.inbound(channel, outcome)
    logs.bind(conversation_id=result.conversation["id"], message_id=result.message["id"])
    log.info("inbound %s %s", channel, outcome, extra={"channel": channel, "outcome": outcome})


def hook_request(request: Request) -> channels.HookRequest:
    """The request as the provider signed it: HUB_PUBLIC_URL + path (+ query)."""
    settings: Settings = request.app.state.settings
    url = settings.resolved_public_url + request.url.path
    return channels.HookRequest(
        url=f"{url}?{request.url.query}" if request.url.query else url,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params) if request.url.query else {},
    )


async def _named(request: Request, item: inbound.InboundMessage) -> inbound.InboundMessage:
    """The item with the peer's name when its conversation is new and the channel can tell it."""
    lookup = item.name_lookup
    if lookup is None or item.peer_display_name:
        return item
    if await inbound.room_exists(item.account, item.self_address.target, item.peer.target):
        return item
    name = await lookup_name(request.app.state.http, lookup)
    return dataclasses.replace(item, peer_display_name=name)


async def _store(request: Request, kind: str, item: inbound.InboundMessage) -> inbound.InboundResult | None:
    item = await _named(request, item)
    if item.opens_only:
        await inbound.open_room(item.account, item.self_address, item.peer, item.peer_display_name)
        return None
    result = await inbound.store_inbound(item)
    count_inbound(kind, result)
    return result


async def receive(request: Request, account: dict, body: bytes) -> Response:
    """Stores every message the body carries, then starts the flows. For a batch (LINE) an
    unusable item is logged and skipped, 200 once all valid ones are stored, and a flow that
    cannot start now is left to recovery; otherwise the first problem is the answer."""
    kind = account["type"]
    channel = channels.channel(kind)
    facts = hook_request(request)
    if not channel.verify(account, facts, body):
        metrics.inbound(kind, "rejected")
        raise Unauthorized(channel.SIGNATURE_PROBLEM)
    parsed = channel.parse(account, facts, body, request.app.state.settings)
    for report in parsed.statuses:
        changed = await outbound.apply_status_callback(
            account["id"],
            report.provider_message_id,
            report.delivery_status,
            report.reason,
            message_id=report.message_id,
        )
        status = report.provider_status
        log.info("status callback %s changed=%s", status, changed, extra={"outcome": status})
    results: list[inbound.InboundResult] = []
    skipped = list(parsed.skipped)
    for index, item in enumerate(parsed.messages):
        try:
            if (result := await _store(request, kind, item)) is not None:
                results.append(result)
        except (BadRequest, *BAD_INPUT_ERRORS) as exc:
            if not parsed.batch:
                raise
            skipped.append(f"item {index}: {exc}")
    for line in skipped:
        log.warning("%s account=%s %s skipped", kind, account["id"], line)
    if parsed.batch and skipped and len(skipped) >= parsed.total:
        # Nothing in the batch was usable: say so rather than acknowledge it.
        raise BadRequest(f"no valid {channel.CAPABILITIES.name} event: " + "; ".join(skipped)[:500])
    for result in results:
        try:
            await start_flow(request, result)
        except Unavailable:
            if not parsed.batch:
                raise
            # logged by start_flow; the worker's recovery starts it
    return Response(channel.ACK.content, media_type=channel.ACK.media_type, status_code=200)


def check_size(channel, size: int) -> None:
    limit = getattr(channel, "MAX_BODY_BYTES", DEFAULT_MAX_BODY)
    if size > limit:
        raise PayloadTooLarge(f"a {channel.CAPABILITIES.name} hook body is at most {limit:,} bytes")


async def guard_hook_body(request: Request) -> None:
    """Before the body is read (the strict-input check reads it): a body declared larger than its
    account's channel takes is 413 from the headers alone, so only email posts may be large.
    The account found here is kept for the handler."""
    try:
        account_id = UUID(request.path_params["account_id"])
    except ValueError:
        account_id = None  # the handler answers for a malformed id
    if account_id is not None:
        account = await accounts.get_account_for_hook(account_id)
        request.state.hook_account = account
        channel = channels.channel(account["type"]) if account else None
        declared = request.headers.get("content-length", "")
        if channel is not None and declared.isdigit():
            check_size(channel, int(declared))
    await strict_input(request)


class HookController(Controller):
    path = "/v1.0/hooks/accounts"
    tags = ["hooks"]

    @post(
        "/{account_id:str}",
        status_code=200,
        summary="Inbound provider webhook (SMS: Twilio form posts and status callbacks; LINE: webhooks; "
        "email: Mailgun inbound-route posts)",
        description="No JWT. SMS: X-Twilio-Signature computed with the account's auth token over "
        "HUB_PUBLIC_URL + path. LINE: X-Line-Signature, base64 HMAC-SHA256 of the raw body with the "
        "channel secret. Email: multipart/form-data or urlencoded Mailgun fields, `signature` = hex "
        "HMAC-SHA256 of `timestamp` + `token` with the account's signing key, `timestamp` within 5 "
        "minutes; at most 10 attachments of 10 MB each (413 beyond). A bad or missing signature is "
        "401 and stores nothing.",
        request_max_body_size=MAX_HOOK_BODY,
        before_request=guard_hook_body,
        opt={MULTIPART_FILES: True},
    )
    async def receive(self, request: Request, account_id: FromPath[UUID]) -> Response:
        account = getattr(request.state, "hook_account", None)
        account = account or await accounts.get_account_for_hook(account_id)
        if account is None:
            raise NotFound(f"account {account_id} not found")
        logs.bind(customer_id=account["customer_id"], account_id=account["id"])
        channel = channels.channel(account["type"])
        if channel is None:
            raise NotFound(f"account {account_id} has no inbound channel")
        body = await request.body()
        check_size(channel, len(body))
        return await receive(request, account, body)
