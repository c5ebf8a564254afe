"""The LINE channel (Messaging API): webhooks signed with `X-Line-Signature`, push message
objects, inbound summaries, profile and group-name lookups.

Shapes follow line/line-openapi: `messaging-api.yml` (PushMessageRequest.messages has maxItems 5;
ImageMessage needs originalContentUrl + previewImageUrl; VideoMessage a previewImageUrl; AudioMessage
a duration; ErrorResponse of a 409 carries `sentMessages`; content is served from
https://api-data.line.me) and `webhook.yml` (GroupSource.groupId, RoomSource.roomId, join/leave
events, sticker and location message contents)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import msgspec

from hub.addresses import Address
from hub.channels import (
    Ack,
    Capabilities,
    HookRequest,
    HttpRequest,
    InboundMessage,
    NameLookup,
    Outgoing,
    Parsed,
    Sent,
    media_kind,
)
from hub.errors import BadRequest, Unauthorized
from hub.models import Media
from hub.settings import Settings

CAPABILITIES = Capabilities(
    name="LINE",
    text_limit=5000,
    max_push_messages=5,
    # A hub media is {type, url}: a LINE video also needs a preview image and an audio message a
    # duration, which it does not carry, so only images are sent; others are refused at the API.
    media_kinds=frozenset({"image"}),
    needs_https_media=True,
    max_medias=10,
)

SIGNATURE_PROBLEM = "bad or missing X-Line-Signature"
ACK = Ack({})

# Rooms (multi-person chats) have no summary endpoint, and a group may not tell its name.
GROUP_FALLBACK_NAME = "Group"


# --- inbound ---------------------------------------------------------------------------------


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


def signature(channel_secret: str, body: bytes) -> str:
    """Base64 HMAC-SHA256 of the raw body with the channel secret."""
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_signature(channel_secret: str, body: bytes, given: str) -> bool:
    return bool(given) and hmac.compare_digest(signature(channel_secret, body), given)


def verify(account: dict[str, Any], request: HookRequest, body: bytes) -> bool:
    if not account["secret"]:
        raise Unauthorized("this account has no channel secret; set one to receive events")
    return verify_signature(account["secret"], body, request.header("X-Line-Signature"))


def self_address(account: dict[str, Any]) -> Address:
    """Our side of every conversation of a LINE account: the account itself."""
    return Address(type="line", target=str(account["id"]), name=account["name"])


class SkippedEvent(Exception):
    pass


def decode_event(raw: msgspec.Raw) -> tuple[LineEvent, str]:
    """An event and the chat it belongs to (user, group or room id); SkippedEvent if unusable."""
    try:
        event = msgspec.json.decode(raw, type=LineEvent)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SkippedEvent(f"malformed event: {exc}") from exc
    source = event.source
    if source.type not in ("user", "group", "room"):
        raise SkippedEvent(f"source type {source.type!r} is not user, group or room")
    target = chat_target(source.type, source.userId, source.groupId, source.roomId)
    if not target or len(target) > 255:
        raise SkippedEvent(f"a {source.type} source without its id")
    if event.type == "message":
        if event.message is None or not (event.webhookEventId or event.message.id):
            raise SkippedEvent("a message event needs a message with webhookEventId or message.id")
    return event, target


def _medias(settings: Settings, message: LineMessage) -> list[Media]:
    if message.type not in ("image", "video", "audio", "file"):
        return []
    provider = message.contentProvider
    if provider and provider.type == "external" and provider.originalContentUrl:
        return [Media(type=message.type, url=provider.originalContentUrl)]
    # LINE serves content from its data host, not the API host.
    url = f"{settings.resolved_line_data_api_url}/v2/bot/message/{message.id}/content"
    return [Media(type=message.type, url=url)]


def name_lookup(account: dict[str, Any], settings: Settings, event: LineEvent) -> NameLookup:
    """How to name who the conversation is with: a user's display name (from the event, else the
    profile endpoint), a group's name from its summary, else "" (user) or "Group"."""
    base, source = settings.resolved_line_api_url, event.source
    headers = {"Authorization": f"Bearer {account['token']}"}
    if source.type == "user":
        if event.displayName:
            return NameLookup(None, fallback=event.displayName)
        profile = HttpRequest(f"{base}/v2/bot/profile/{source.userId}", method="GET", headers=headers)
        return NameLookup(profile, field="displayName")
    if source.type == "group":
        url = f"{base}/v2/bot/group/{quote(source.groupId, safe='')}/summary"
        return NameLookup(HttpRequest(url, method="GET", headers=headers), "groupName", GROUP_FALLBACK_NAME)
    return NameLookup(None, fallback=GROUP_FALLBACK_NAME)


def event_message(
    account: dict[str, Any], settings: Settings, event: LineEvent, target: str
) -> InboundMessage | None:
    """What an event means for the hub: a message, a conversation opened without one (follow,
    join), or nothing (unfollow and leave keep the conversation; other events carry no message)."""
    peer = Address(type="line", target=target)
    lookup = name_lookup(account, settings, event)
    if event.type in ("follow", "join"):
        return InboundMessage(
            account=account,
            peer=peer,
            self_address=self_address(account),
            provider_message_id="",
            opens_only=True,
            name_lookup=lookup,
        )
    if event.type != "message" or event.message is None:
        return None
    message, sender = event.message, event.source.userId
    return InboundMessage(
        account=account,
        peer=peer,
        self_address=self_address(account),
        provider_message_id=event.webhookEventId or message.id,
        text=summary(message.type, msgspec.structs.asdict(message)),
        medias=_medias(settings, message),
        # In a group the conversation is with the group; the member who wrote is the source.
        sender=Address(type="line", target=sender) if sender and sender != target else None,
        content_type=message.type,
        name_lookup=lookup,
    )


def parse(account: dict[str, Any], request: HookRequest, body: bytes, settings: Settings) -> Parsed:
    """Every usable event of the batch; the others are listed in `skipped`."""
    try:
        webhook = msgspec.json.decode(body, type=LineWebhook)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not a LINE webhook body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest("body must be JSON") from exc
    parsed = Parsed(batch=True, total=len(webhook.events))
    for index, raw in enumerate(webhook.events):
        try:
            event, target = decode_event(raw)
        except SkippedEvent as exc:
            parsed.skipped.append(f"event {index}: {exc}")
            continue
        if (item := event_message(account, settings, event, target)) is not None:
            parsed.messages.append(item)
    return parsed


# --- outbound --------------------------------------------------------------------------------


def message_objects(text: str, medias: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The LINE message objects of one hub message: its text, then one image per media."""
    objects: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for media in medias:
        url = media.get("url") or ""
        if url and media_kind(media.get("type", "")) == "image":
            objects.append({"type": "image", "originalContentUrl": url, "previewImageUrl": url})
    return objects


def pushes(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Message objects split into pushes of at most 5, in order: nothing is dropped."""
    size = CAPABILITIES.max_push_messages
    return [objects[i : i + size] for i in range(0, len(objects), size)]


def retry_key(message_id: str, index: int) -> str:
    """X-Line-Retry-Key of push `index` of a message: the same on every attempt, so LINE delivers
    each push once. The first push keeps the message id (what a single push always used)."""
    if index == 0:
        return str(uuid.UUID(message_id))
    return str(uuid.uuid5(uuid.UUID(message_id), f"line-push-{index}"))


def build_request(account: dict[str, Any], out: Outgoing, settings: Settings) -> list[HttpRequest]:
    return push_requests(settings.resolved_line_api_url, account["token"], out)


def push_requests(base_url: str, channel_token: str, out: Outgoing) -> list[HttpRequest]:
    """POST {base}/v2/bot/message/push, once per 5 message objects, in order. Each push has its own
    X-Line-Retry-Key, stable across attempts: a retried push is delivered once, and a 409 (that
    key was accepted before) carries the earlier push's `sentMessages` in its body."""
    batches = pushes(message_objects(out.text, out.medias))
    return [
        HttpRequest(
            url=f"{base_url}/v2/bot/message/push",
            json={"to": out.to, "messages": objects},
            headers={
                "Authorization": f"Bearer {channel_token}",
                "X-Line-Retry-Key": retry_key(out.message_id, index),
            },
            accepted_statuses=(409,),
            label=f"push {index + 1} of {len(batches)}" if len(batches) > 1 else "",
        )
        for index, objects in enumerate(batches)
    ]


def read_answer(status_code: int, body: Any) -> Sent:
    """The ids of `sentMessages` (in a 200, and in the 409 of a push accepted before)."""
    sent = body.get("sentMessages") if isinstance(body, dict) else None
    return Sent([str(m["id"]) for m in sent or [] if isinstance(m, dict) and m.get("id")], "sent")


# --- naming and summaries --------------------------------------------------------------------


def chat_target(source_type: str, user_id: str, group_id: str, room_id: str) -> str:
    """Who a conversation is with: the group or room for group chats, else the user."""
    if source_type == "group":
        return group_id
    if source_type == "room":
        return room_id
    return user_id


def group_title_name(group_name: str) -> str:
    return group_name or GROUP_FALLBACK_NAME


def summary(message_type: str, fields: dict[str, Any]) -> str:
    """Readable text of a LINE message (`fields`: the message object of the webhook)."""
    if message_type == "text":
        return str(fields.get("text") or "")
    if message_type == "sticker":
        words = str(fields.get("text") or "").strip()
        return f"[sticker: {words}]" if words else "[sticker]"
    if message_type == "location":
        place = ", ".join(str(fields[k]) for k in ("title", "address") if fields.get(k))
        if not place and fields.get("latitude") is not None and fields.get("longitude") is not None:
            place = f"{fields['latitude']},{fields['longitude']}"
        return f"[location: {place}]" if place else "[location]"
    if message_type == "file" and fields.get("fileName"):
        return f"[file: {fields['fileName']}]"
    return f"[{message_type or 'message'}]"
