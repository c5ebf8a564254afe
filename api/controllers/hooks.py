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

from activities.providers import line_profile
from api import logs, temporal
from hub import accounts, inbound, metrics, outbound
from hub.addresses import Address, normalize_tel
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
        log.warning("activeflow %s not started now: %s", result.activeflow["id"], exc)
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
        changed = await outbound.apply_status_callback(account["id"], sid, status, reason or status)
        log.info("status callback %s changed=%s", status, changed, extra={"outcome": status})
        return Response(EMPTY_TWIML, media_type="application/xml", status_code=200)
    result = await inbound.store_inbound(parse_twilio_sms(account, params))
    count_inbound("sms", result)
    await start_flow(request, result)
    return Response(EMPTY_TWIML, media_type="application/xml", status_code=200)


# --- LINE (Messaging API webhook) -----------------------------------------------------------


class LineSource(msgspec.Struct):
    type: str = "user"
    userId: str = ""  # noqa: N815 - LINE's field name


class LineContentProvider(msgspec.Struct):
    type: str = "line"
    originalContentUrl: str = ""  # noqa: N815


class LineMessage(msgspec.Struct):
    id: str = ""
    type: str = ""
    text: str = ""
    contentProvider: LineContentProvider | None = None  # noqa: N815


class LineEvent(msgspec.Struct):
    type: str
    webhookEventId: str = ""  # noqa: N815
    source: LineSource = msgspec.field(default_factory=LineSource)
    message: LineMessage | None = None
    # Not in LINE's schema; honoured when a relay adds the profile name to a follow event.
    displayName: str = ""  # noqa: N815


class LineWebhook(msgspec.Struct):
    destination: str = ""
    events: list[LineEvent] = []


def verify_line_signature(channel_secret: str, body: bytes, signature: str) -> bool:
    digest = hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()
    return bool(signature) and hmac.compare_digest(base64.b64encode(digest).decode(), signature)


def _line_medias(settings: Settings, message: LineMessage) -> list[Media]:
    if message.type not in ("image", "video", "audio", "file"):
        return []
    provider = message.contentProvider
    if provider and provider.type == "external" and provider.originalContentUrl:
        return [Media(type=message.type, url=provider.originalContentUrl)]
    return [
        Media(type=message.type, url=f"{settings.resolved_line_api_url}/v2/bot/message/{message.id}/content")
    ]


async def _display_name(request: Request, account: dict, event: LineEvent) -> str:
    """The peer's LINE display name: from the event, else the profile endpoint, else ""."""
    if event.displayName:
        return event.displayName
    settings: Settings = request.app.state.settings
    return await line_profile(
        request.app.state.http, settings.resolved_line_api_url, account["token"], event.source.userId
    )


async def receive_line(request: Request, account: dict, body: bytes) -> Response:
    settings: Settings = request.app.state.settings
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
    for event in webhook.events:
        user_id = event.source.userId
        if not user_id:
            continue  # group and room sources have no one-to-one conversation
        peer = Address(type="line", target=user_id)

        if event.type == "follow":
            await inbound.open_room(account, me, peer, await _display_name(request, account, event))
        elif event.type == "message" and event.message is not None:
            if not (event.webhookEventId or event.message.id):
                raise BadRequest("a LINE message event needs webhookEventId or message.id")
            exists = await inbound.room_exists(account, me.target, user_id)
            known = "" if exists else await _display_name(request, account, event)
            result = await inbound.store_inbound(
                inbound.InboundMessage(
                    account=account,
                    peer=peer,
                    self_address=me,
                    provider_message_id=event.webhookEventId or event.message.id,
                    text=event.message.text,
                    medias=_line_medias(settings, event.message),
                    peer_display_name=known,
                )
            )
            count_inbound("line", result)
            await start_flow(request, result)
        # unfollow keeps the conversation and its history; other event types carry no messages.
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
