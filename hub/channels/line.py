"""The LINE channel (Messaging API): capabilities, push message objects, inbound summaries.

Shapes follow line/line-openapi: `messaging-api.yml` (PushMessageRequest.messages has maxItems 5;
ImageMessage needs originalContentUrl + previewImageUrl; VideoMessage a previewImageUrl; AudioMessage
a duration; ErrorResponse of a 409 carries `sentMessages`; content is served from
https://api-data.line.me) and `webhook.yml` (GroupSource.groupId, RoomSource.roomId, join/leave
events, sticker and location message contents)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from hub.channels import Capabilities, media_kind

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

# Rooms (multi-person chats) have no summary endpoint, and a group may not tell its name.
GROUP_FALLBACK_NAME = "Group"


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
