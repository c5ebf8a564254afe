"""The SMS channel (Twilio-compatible REST, API 2010-04-01): inbound form posts and status
callbacks signed with `X-Twilio-Signature`, outbound `Messages.json` creates.

Limits follow twilio/twilio-oai `spec/json/twilio_api_v2010.json`: `Body` "can be up to 1,600
characters", up to ten `MediaUrl`; the `MessageStatus` values are `message_enum_status`."""

from __future__ import annotations

import base64
import hmac
from functools import lru_cache
from hashlib import sha1
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse
from uuid import UUID

from twilio.request_validator import add_port, remove_port

from hub.addresses import Address, has_foreign_digits, normalize_tel
from hub.channels import (
    Ack,
    Capabilities,
    HookRequest,
    HttpRequest,
    InboundMessage,
    Outgoing,
    Parsed,
    Sent,
    StatusReport,
)
from hub.errors import BadRequest, Unauthorized
from hub.models import Media
from hub.settings import Settings

CAPABILITIES = Capabilities(
    name="SMS",
    text_limit=1600,
    max_push_messages=0,
    # MMS takes images, audio, video, vCards, PDFs...; the provider judges the type.
    media_kinds=frozenset({"*"}),
    needs_https_media=False,
    max_medias=10,
)

SIGNATURE_PROBLEM = "bad or missing X-Twilio-Signature"
ACK = Ack('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', "application/xml")

# The query parameter of our StatusCallback URL naming the hub's message. Twilio signs the full
# URL, query included, so a callback that names a message is as authentic as the rest of it.
MESSAGE_ID_PARAM = "message_id"

# Twilio's message statuses -> the hub's `delivery_status` (queued, sent, delivered,
# undelivered, failed). `receiving`/`received` belong to inbound messages.
DELIVERY_STATUS = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "partially_delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}


def status_callback_url(public_url: str, account_id: UUID | str, message_id: UUID | str) -> str:
    query = urlencode({MESSAGE_ID_PARAM: str(message_id)})
    return f"{public_url}/v1.0/hooks/accounts/{account_id}?{query}"


# --- inbound ---------------------------------------------------------------------------------


def parse_form(body: bytes) -> dict[str, str]:
    return dict(_recent_form(body) if len(body) <= _CACHED_FORM_BYTES else _form_items(body))


# verify and then parse read the same body: its fields are kept for the last few (small) bodies.
_CACHED_FORM_BYTES = 65_536


def _form_items(body: bytes) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("body must be application/x-www-form-urlencoded") from exc


_recent_form = lru_cache(maxsize=16)(_form_items)


def verify(account: dict[str, Any], request: HookRequest, body: bytes) -> bool:
    """Twilio's signature: HMAC-SHA1 (auth token) of the public URL and the sorted form params."""
    params = parse_form(body)
    if not account["token"]:
        # Anyone can compute a signature with an empty key: no credential, no inbound.
        raise Unauthorized("this account has no auth token; set one to receive messages")
    signature = request.header("X-Twilio-Signature")
    return bool(signature) and signature_valid(account["token"], request.url, params, signature)


@lru_cache(maxsize=4096)
def _signed_urls(url: str) -> tuple[str, ...]:
    """The forms of `url` Twilio may have signed (it signs with or without the port, see its
    RequestValidator.validate): the URL as given first, as almost every post is signed that way."""
    parsed = urlparse(url)
    forms = (remove_port(parsed), add_port(parsed))
    return tuple(sorted(set(forms), key=lambda form: form != url))


def signature_valid(token: str, url: str, params: dict[str, str], signature: str) -> bool:
    """twilio's RequestValidator(token).validate(url, params, signature) (HMAC-SHA1) for form
    params, computing the second HMAC (the URL's other port form) only when the first differs.
    Either comparison is constant-time; which form matched is all the timing tells."""
    key = token.encode("utf-8")
    given = signature.encode("utf-8")
    payload = "".join(name + params[name] for name in sorted(params))
    for form in _signed_urls(url):
        computed = base64.b64encode(hmac.digest(key, (form + payload).encode("utf-8"), sha1))
        if hmac.compare_digest(computed, given):
            return True
    return False


def _callback_message_id(request: HookRequest) -> UUID | None:
    value = request.query.get(MESSAGE_ID_PARAM, "")
    try:
        return UUID(value) if value else None
    except ValueError as exc:
        raise BadRequest(f"{MESSAGE_ID_PARAM} must be a UUID") from exc


def parse(account: dict[str, Any], request: HookRequest, body: bytes, settings: Settings) -> Parsed:
    """An inbound message, or a status callback on one we sent (`MessageStatus` other than
    `received`)."""
    params = parse_form(body)
    status = (params.get("MessageStatus") or "").lower()
    if status and status != "received":
        sid = params.get("MessageSid") or params.get("SmsSid") or ""
        if not sid:
            raise BadRequest("MessageSid is required")
        reason = " ".join(f"{k}={params[k]}" for k in ("ErrorCode", "ErrorMessage") if params.get(k))
        report = StatusReport(
            provider_message_id=sid,
            delivery_status=DELIVERY_STATUS.get(status, ""),
            reason=reason or status,
            message_id=_callback_message_id(request),
            provider_status=status,
        )
        return Parsed(statuses=[report])
    return Parsed(messages=[inbound_message(account, params)])


def inbound_message(account: dict[str, Any], params: dict[str, str]) -> InboundMessage:
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
    if not 0 <= num_media <= CAPABILITIES.max_medias:
        raise BadRequest(f"NumMedia must be between 0 and {CAPABILITIES.max_medias}")
    medias = [
        Media(type=params.get(f"MediaContentType{i}", ""), url=params[f"MediaUrl{i}"])
        for i in range(num_media)
        if params.get(f"MediaUrl{i}")
    ]
    # Short codes and alphanumeric senders are not E.164; keep them as the provider gave them.
    peer_target = normalize_tel(sender) or sender
    self_target = normalize_tel(recipient) or recipient or account["number"]
    return InboundMessage(
        account=account,
        peer=Address(type="tel", target=peer_target),
        self_address=Address(type="tel", target=self_target, name=account["name"]),
        provider_message_id=sid,
        text=params.get("Body", ""),
        medias=medias,
    )


# --- outbound --------------------------------------------------------------------------------


def build_request(account: dict[str, Any], out: Outgoing, settings: Settings) -> list[HttpRequest]:
    """POST {base}/2010-04-01/Accounts/{sid}/Messages.json, with a StatusCallback naming the hub's
    message (callbacks may come before the provider's sid is recorded)."""
    if not out.status_callback:
        out.status_callback = status_callback_url(settings.resolved_public_url, account["id"], out.message_id)
    return [create_request(settings.resolved_sms_api_url, account["sid"], account["token"], out)]


def create_request(base_url: str, sid: str, token: str, out: Outgoing) -> HttpRequest:
    form: dict[str, str | list[str]] = {"To": out.to, "From": out.sender, "Body": out.text}
    if media_urls := [m["url"] for m in out.medias if m.get("url")]:
        form["MediaUrl"] = media_urls
    if out.status_callback:
        form["StatusCallback"] = out.status_callback
    return HttpRequest(
        url=f"{base_url}/2010-04-01/Accounts/{sid}/Messages.json",
        form=form,
        auth=(sid, token),
        # Ignored by providers that do not know it; the fake dedupes on it.
        headers={"Idempotency-Key": f"send-{out.message_id}"},
    )


def read_answer(status_code: int, body: Any) -> Sent:
    """The message's sid and Twilio's `status` of it."""
    body = body if isinstance(body, dict) else {}
    message_sid = str(body.get("sid", ""))
    return Sent([message_sid] if message_sid else [], DELIVERY_STATUS.get(str(body.get("status", "")), ""))
