"""POST /v1.0/hooks/accounts/{id}: provider webhooks, authenticated by the provider's signature."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl
from uuid import UUID

from litestar import Controller, Request, Response, post
from litestar.params import FromPath
from twilio.request_validator import RequestValidator

from hub import accounts, inbound
from hub.addresses import Address, normalize_tel
from hub.errors import BadRequest, NotFound, Unauthorized
from hub.models import Media
from hub.settings import Settings

log = logging.getLogger("hub.hooks")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_MEDIA = 10


def _public_url(request: Request) -> str:
    settings: Settings = request.app.state.settings
    url = settings.resolved_public_url + request.url.path
    return f"{url}?{request.url.query}" if request.url.query else url


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


class HookController(Controller):
    path = "/v1.0/hooks/accounts"
    tags = ["hooks"]

    @post(
        "/{account_id:str}",
        status_code=200,
        summary="Inbound provider webhook (Twilio-format SMS form posts)",
        description="No JWT: authenticated by X-Twilio-Signature computed with the account's auth "
        "token over HUB_PUBLIC_URL + path. A bad or missing signature is 401 and stores nothing.",
    )
    async def receive(self, request: Request, account_id: FromPath[UUID]) -> Response:
        account = await accounts.get_account_for_hook(account_id)
        if account is None:
            raise NotFound(f"account {account_id} not found")
        body = await request.body()
        if account["type"] != "sms":
            raise BadRequest(f"account type {account['type']!r} has no inbound hook yet")
        try:
            params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest("body must be application/x-www-form-urlencoded") from exc
        signature = request.headers.get("X-Twilio-Signature", "")
        if not signature or not RequestValidator(account["token"]).validate(
            _public_url(request), params, signature
        ):
            raise Unauthorized("bad or missing X-Twilio-Signature")
        result = await inbound.store_inbound(parse_twilio_sms(account, params))
        log.info(
            "inbound sms account=%s message=%s conversation=%s duplicate=%s",
            account_id,
            result.message["id"],
            result.conversation["id"],
            result.duplicate,
        )
        return Response(EMPTY_TWIML, media_type="application/xml", status_code=200)
