"""POST /v1.0/hooks/accounts/{id}: provider webhooks, authenticated by the provider's signature.

SMS accounts take Twilio-format form posts (inbound messages and delivery status callbacks,
`X-Twilio-Signature`); LINE accounts take Messaging API webhooks (`X-Line-Signature`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from urllib.parse import parse_qsl
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import FromPath
from twilio.request_validator import RequestValidator

from activities.providers import line_group_name, line_profile
from api import logs, temporal
from api.errors import BAD_INPUT_ERRORS
from hub import accounts, inbound, metrics, outbound
from hub.addresses import Address, has_foreign_digits, normalize_tel
from hub.channels import line, sms
from hub.errors import BadRequest, NotFound, Unauthorized, Unavailable
from hub.models import Media
from hub.settings import Settings

log = logging.getLogger("hub.hooks")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_MEDIA = 10


async def start_flow(request: Request, result: inbound.InboundResult) -> None:
    """Starts the activeflow the message triggered. If Temporal cannot take it now, answer 503:
    the message is stored, and the provider's retry (a duplicate) tries the start again; the
    worker's recovery starts it in any case."""
    if result.activeflow is None:
        return
    try:
        await temporal.start_activeflow(
            request.app.state.temporal, request.app.state.settings, result.activeflow
        )
    except Exception as exc:
        if not temporal.is_unavailable(exc):
            raise  # a bug, not an outage: a 500 with its traceback (database outages answer 503 there)
        log.warning("activeflow %s not started now: %s", result.activeflow["id"], exc, exc_info=exc)
        raise Unavailable("the flow engine is unavailable; retry") from exc


def count_inbound(channel: str, result: inbound.InboundResult) -> None:
    outcome = "duplicate" if result.duplicate else "stored"
    metrics.inbound(channel, outcome)
    logs.bind(conversation_id=result.conversation["id"], message_id=result.message["id"])
    log.info("inbound %s %s", channel, outcome, extra={"channel": channel, "outcome": outcome})


# --- SMS (Twilio wire format) ---------------------------------------------------------------


def _public_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    url = settings.resolved_public_url + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


def _callback_message_id(request: Request) -> UUID | None:
    """The hub's message id our StatusCallback URL carries (signed with the rest of the URL)."""
    value = request.query_params.get(sms.MESSAGE_ID_PARAM, "")
    try:
        return UUID(value) if value else None
    except ValueError as exc:
        raise BadRequest(f"{sms.MESSAGE_ID_PARAM} must be a UUID") from exc


def parse_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("body must be application/x-www-form-urlencoded") from exc


def parse_twilio_sms(account: dict, params: dict[str, str]) -> inbound.InboundMessage:
    sid = params.get("MessageSid") or params.get("SmsMessageSid") or ""
    if not sid or len(sid) > 255:
        raise BadRequest("MessageSid is required")
    sender = (params.get("From") or "").strip()
    recipient = (params.get("To") or "").strip()
    for name, value in (("From", sender), ("To", recipient)):
        if has_foreign_digits(value):
            raise BadRequest(f"{name} must be written with ASCII digits")
    try:
        num_media = int(params.get("NumMedia") or 0)
    except ValueError as exc:
        raise BadRequest("NumMedia must be an integer") from exc
    if not 0 <= num_media <= MAX_MEDIA:
        raise BadRequest(f"NumMedia must be between 0 and {MAX_MEDIA}")
    medias = [
        Media(type=params.get(f"MediaContentType{i}", ""), url=params[f"MediaUrl{i}"])
        for i in range(num_media)
        if params.get(f"MediaUrl{i}")
    ]
    # Short codes and alphanumeric senders are not E.164; keep them as the provider gave them.
    peer_target = normalize_tel(sender) or sender
    self_target = normalize_tel(recipient) or recipient or account["number"]
    return inbound.InboundMessage(
        account=account,
        peer=Address(type="tel", target=peer_target),
        self_address=Address(type="tel", target=self_target, name=account["name"]),
        provider_message_id=sid,
        text=params.get("Body", ""),
        medias=medias,
    )


async def receive_sms(request: Request, account: dict, body: bytes) -> Response:
    params = parse_form(body)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not account["token"]:
        # Anyone can compute a signature with an empty key: no credential, no inbound.
        raise Unauthorized("this account has no auth token; set one to receive messages")
    if not signature or not RequestValidator(account["token"]).validate(
        _public_url(request), params, signature
    ):
        metrics.inbound("sms", "rejected")
        raise Unauthorized("bad or missing X-Twilio-Signature")
    status = (params.get("MessageStatus") or "").lower()
    if status and status != "received":
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if not sid:
            raise BadRequest("MessageSid is required")
        reason = " ".join(f"{k}={params[k]}" for k in ("ErrorCode", "ErrorMessage") if params.get(k))
        changed = await outbound.apply_status_callback(
            account["id"],
            sid,
            sms.DELIVERY_STATUS.get(status, ""),
            reason or status,
            message_id=_callback_message_id(request),
        )
        log.info("status callback %s changed=%s", status, changed, extra={"outcome": status})
        return Response(EMPTY_TWIML, media_type="application/xml", status_code=200)
    result = await inbound.store_inbound(parse_twilio_sms(account, params))
    count_inbound("sms", result)
    await start_flow(request, result)
    return Response(EMPTY_TWIML, media_type="application/xml", status_code=200)


# --- LINE (Messaging API webhook) -----------------------------------------------------------


class LineSource(msgspec.Struct):
    type: str = "user"
    userId: str = ""  # noqa: N815 - LINE's field names
    groupId: str = ""  # noqa: N815
    roomId: str = ""  # noqa: N815


class LineContentProvider(msgspec.Struct):
    type: str = "line"
    originalContentUrl: str = ""  # noqa: N815


class LineMessage(msgspec.Struct):
    id: str = ""
    type: str = ""
    # A text message's text, or the words of a message sticker.
    text: str = ""
    contentProvider: LineContentProvider | None = None  # noqa: N815
    # Location and file messages.
    title: str = ""
    address: str = ""
    latitude: float | None = None
    longitude: float | None = None
    fileName: str = ""  # noqa: N815


class LineEvent(msgspec.Struct):
    type: str
    webhookEventId: str = ""  # noqa: N815
    source: LineSource = msgspec.field(default_factory=LineSource)
    message: LineMessage | None = None
    # Not in LINE's schema; honoured when a relay adds the profile name to a follow event.
    displayName: str = ""  # noqa: N815


class LineWebhook(msgspec.Struct):
    destination: str = ""
    # Decoded one by one, so one malformed event does not cost the others.
    events: list[msgspec.Raw] = []


def verify_line_signature(channel_secret: str, body: bytes, signature: str) -> bool:
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return bool(signature) and hmac.compare_digest(base64.b64encode(digest).decode(), signature)


def _line_medias(settings: Settings, message: LineMessage) -> list[Media]:
    if message.type not in ("image", "video", "audio", "file"):
        return []
    provider = message.contentProvider
    if provider and provider.type == "external" and provider.originalContentUrl:
        return [Media(type=message.type, url=provider.originalContentUrl)]
    # LINE serves content from its data host, not the API host.
    url = f"{settings.resolved_line_data_api_url}/v2/bot/message/{message.id}/content"
    return [Media(type=message.type, url=url)]


async def _chat_name(request: Request, account: dict, event: LineEvent) -> str:
    """The name of who the conversation is with: a user's display name (from the event, else the
    profile endpoint), a group's name from its summary, else "" (user) or "Group"."""
    settings: Settings = request.app.state.settings
    http, base, token = request.app.state.http, settings.resolved_line_api_url, account["token"]
    source = event.source
    if source.type == "user":
        return event.displayName or await line_profile(http, base, token, source.userId)
    name = await line_group_name(http, base, token, source.groupId) if source.type == "group" else ""
    return line.group_title_name(name)


class _SkippedEvent(Exception):
    pass


def _decode_line_event(raw: msgspec.Raw) -> tuple[LineEvent, str]:
    """An event and the chat it belongs to (user, group or room id); _SkippedEvent if unusable."""
    try:
        event = msgspec.json.decode(raw, type=LineEvent)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise _SkippedEvent(f"malformed event: {exc}") from exc
    source = event.source
    if source.type not in ("user", "group", "room"):
        raise _SkippedEvent(f"source type {source.type!r} is not user, group or room")
    target = line.chat_target(source.type, source.userId, source.groupId, source.roomId)
    if not target or len(target) > 255:
        raise _SkippedEvent(f"a {source.type} source without its id")
    if event.type == "message":
        if event.message is None or not (event.webhookEventId or event.message.id):
            raise _SkippedEvent("a message event needs a message with webhookEventId or message.id")
    return event, target


async def _store_line_event(
    request: Request, account: dict, me: Address, event: LineEvent, target: str
) -> inbound.InboundResult | None:
    settings: Settings = request.app.state.settings
    peer = Address(type="line", target=target)
    if event.type in ("follow", "join"):
        await inbound.open_room(account, me, peer, await _chat_name(request, account, event))
        return None
    if event.type != "message" or event.message is None:
        return None  # unfollow and leave keep the conversation; other events carry no message
    message = event.message
    exists = await inbound.room_exists(account, me.target, target)
    known = "" if exists else await _chat_name(request, account, event)
    sender = event.source.userId
    return await inbound.store_inbound(
        inbound.InboundMessage(
            account=account,
            peer=peer,
            self_address=me,
            provider_message_id=event.webhookEventId or message.id,
            text=line.summary(message.type, msgspec.structs.asdict(message)),
            medias=_line_medias(settings, message),
            peer_display_name=known,
            # In a group the conversation is with the group; the member who wrote is the source.
            sender=Address(type="line", target=sender) if sender and sender != target else None,
            content_type=message.type,
        )
    )


async def receive_line(request: Request, account: dict, body: bytes) -> Response:
    """Stores every valid event of the batch first (invalid ones are logged and skipped), then
    starts the flows. 200 once all valid events are stored; 503 only when storing failed (LINE
    redelivers, and stored events dedupe). A flow that cannot start now is left to recovery."""
    if not account["secret"]:
        raise Unauthorized("this account has no channel secret; set one to receive events")
    if not verify_line_signature(account["secret"], body, request.headers.get("X-Line-Signature", "")):
        metrics.inbound("line", "rejected")
        raise Unauthorized("bad or missing X-Line-Signature")
    try:
        webhook = msgspec.json.decode(body, type=LineWebhook)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not a LINE webhook body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest("body must be JSON") from exc
    me = inbound.self_address_of(account)
    results: list[inbound.InboundResult] = []
    skipped: list[str] = []
    for index, raw in enumerate(webhook.events):
        try:
            event, target = _decode_line_event(raw)
            if (result := await _store_line_event(request, account, me, event, target)) is not None:
                count_inbound("line", result)
                results.append(result)
        except (_SkippedEvent, BadRequest, *BAD_INPUT_ERRORS) as exc:
            log.warning("line account=%s event %s skipped: %s", account["id"], index, exc)
            skipped.append(f"event {index}: {exc}")
    if skipped and len(skipped) == len(webhook.events):
        # Nothing in the batch was usable: say so rather than acknowledge it.
        raise BadRequest("no valid LINE event: " + "; ".join(skipped)[:500])
    for result in results:
        try:
            await start_flow(request, result)
        except Unavailable:
            pass  # logged by start_flow; the worker's recovery starts it
    return Response({}, status_code=200)


class HookController(Controller):
    path = "/v1.0/hooks/accounts"
    tags = ["hooks"]

    @post(
        "/{account_id:str}",
        status_code=200,
        summary="Inbound provider webhook (SMS: Twilio form posts and status callbacks; LINE: webhooks)",
        description="No JWT. SMS: X-Twilio-Signature computed with the account's auth token over "
        "HUB_PUBLIC_URL + path. LINE: X-Line-Signature, base64 HMAC-SHA256 of the raw body with the "
        "channel secret. A bad or missing signature is 401 and stores nothing.",
    )
    async def receive(self, request: Request, account_id: FromPath[UUID]) -> Response:
        account = await accounts.get_account_for_hook(account_id)
        if account is None:
            raise NotFound(f"account {account_id} not found")
        logs.bind(customer_id=account["customer_id"], account_id=account["id"])
        body = await request.body()
        if account["type"] == "line":
            return await receive_line(request, account, body)
        return await receive_sms(request, account, body)
