"""What the inbox's templates show: plain dicts built from hub rows, and the rules of what a caller
may do with a conversation (the API's rules: the page shows no button the API would refuse)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit
from uuid import UUID

from api.deps import Caller
from hub.addresses import CHANNEL_OF_ADDRESS
from hub.models import conversation_out, message_out
from hub.permissions import NIL_UUID
from hub.tags import tags_of

# Known channels by their display name; any other channel shows as its own word.
CHANNEL_LABELS = {"sms": "SMS", "line": "LINE", "email": "Email"}
PREVIEW_CHARS = 140


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel or "unknown")


def safe_url(url: str) -> str | None:
    """`url` when a link to it is harmless (http, https or a path of this origin), else None:
    escaping keeps markup out, but a `javascript:` link would still run when clicked."""
    url = (url or "").strip()
    if url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return url
    return None


def media_view(media: dict[str, Any], number: int) -> dict[str, Any]:
    """Images inline (https or the hub's own media), everything else as a link (or as text when
    its URL is not one we link to)."""
    url, kind = media.get("url", ""), (media.get("type") or "").lower()
    href = safe_url(url)
    inline = href is not None and kind.startswith("image") and (href.startswith(("/", "https://")))
    name = url.rsplit("/", 1)[-1].split("?", 1)[0] or f"attachment {number}"
    return {
        "kind": "image" if inline else ("link" if href else "text"),
        "url": href or url,
        "type": kind or "file",
        "name": name,
        "alt": f"Image {number} ({kind or 'image'})",
    }


def participant_label(row: dict[str, Any]) -> str:
    target = row.get("target") or "unknown"
    name = row.get("target_name") or ""
    return f"{name} ({target})" if name and name != target else target


def participant_view(row: dict[str, Any], accounts: dict[UUID, str]) -> dict[str, Any]:
    channel = CHANNEL_OF_ADDRESS.get(row["address_type"], row["address_type"])
    return {
        "id": str(row["id"]),
        "channel": channel,
        "channel_label": channel_label(channel),
        "label": participant_label(row),
        "account_name": accounts.get(row["account_id"], ""),
        "tm_last_active": row.get("tm_last_active"),
    }


def row_view(
    row: dict[str, Any], participants: list[dict[str, Any]], owners: dict[UUID, str]
) -> dict[str, Any]:
    """One line of a conversation list."""
    conversation = conversation_out(row)
    channels = list(
        dict.fromkeys(CHANNEL_OF_ADDRESS.get(p["address_type"], p["address_type"]) for p in participants)
    )
    if not channels:
        channels = [conversation.type]
    last = conversation.last_message
    return {
        "id": str(conversation.id),
        "name": conversation.name or "(untitled)",
        "status": conversation.status,
        "channels": [channel_label(c) for c in channels],
        "tags": conversation.tags,
        "owner": owner_name(conversation.owner_id, owners),
        "assigned": conversation.owner_id != NIL_UUID,
        "activity": conversation.tm_last_message or conversation.tm_create,
        "last": None
        if last is None
        else {"direction": last.direction, "text": _preview(last.text), "tm_create": last.tm_create},
    }


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def owner_name(owner_id: UUID, owners: dict[UUID, str]) -> str:
    if owner_id == NIL_UUID:
        return ""
    return owners.get(owner_id, "an agent no longer here")


def message_view(row: dict[str, Any]) -> dict[str, Any]:
    message = message_out(row)
    medias = [media_view({"type": m.type, "url": m.url}, n) for n, m in enumerate(message.medias, 1)]
    return {
        "id": str(message.id),
        "direction": message.direction,
        "incoming": message.direction == "incoming",
        "channel_label": channel_label(message.channel) if message.channel else "",
        "status": message.status,
        "delivery_status": message.delivery_status,
        "reason": message.reason,
        "text": message.text,
        "content_type": message.content_type,
        "medias": medias,
        "from": message.source.target_name or message.source.target,
        "to": message.destination.target_name or message.destination.target,
        "tm_create": message.tm_create,
        "deleted": message.tm_delete is not None,
    }


def abilities(caller: Caller, conversation: dict[str, Any]) -> dict[str, bool]:
    """The buttons the caller gets (hub.permissions: owner or admin/manager, PUT admin/manager)."""
    admin = caller.is_admin_or_manager
    owner = conversation["owner_id"]
    mine = owner == caller.agent_id
    may_change = admin or mine
    is_open = conversation.get("status", "open") == "open"
    return {
        "assign_self": admin and not mine,
        "assign_menu": admin,
        "unassign": owner != NIL_UUID and may_change,
        "close": is_open and may_change,
        "reopen": not is_open and may_change,
        "tag": may_change,
    }


def temporal_links(base: str, namespace: str, conversation_id: UUID, workflow_id: str = "") -> str:
    """The Temporal UI's workflow list filtered by the ConversationId search attribute (and the
    run's workflow id), or "" when no UI is configured."""
    if not base:
        return ""
    query = f'ConversationId="{conversation_id}"'
    if workflow_id:
        query += f' AND WorkflowId="{workflow_id}"'
    return f"{base}/namespaces/{quote(namespace, safe='')}/workflows?query={quote(query, safe='')}"


def conversation_view(row: dict[str, Any], owners: dict[UUID, str]) -> dict[str, Any]:
    conversation = conversation_out(row)
    return {
        "id": str(conversation.id),
        "name": conversation.name or "(untitled)",
        "detail": conversation.detail,
        "status": conversation.status,
        "closed_reason": conversation.closed_reason,
        "tm_closed": conversation.tm_closed,
        "tags": tags_of(row),
        "owner_id": str(conversation.owner_id),
        "owner": owner_name(conversation.owner_id, owners),
        "assigned": conversation.owner_id != NIL_UUID,
        "previous_conversation_id": conversation.previous_conversation_id,
        "tm_create": conversation.tm_create,
    }


def iso(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def short_time(value: datetime | None) -> str:
    """A UTC fallback; the page's script shows times in the reader's own zone."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
