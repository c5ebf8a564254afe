"""Conversation tags: the rules (at most 20, 1-50 characters of [a-z0-9_-], lowercased) and storage."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import msgspec
from piccolo.engine.postgres import PostgresEngine
from piccolo.query import WhereRaw

from hub.db import current_engine
from hub.errors import BadRequest
from hub.tables import Conversation, ConversationTag

MAX_TAGS = 20
MAX_TAG_LENGTH = 50
TAG_PATTERN = r"^[a-z0-9_-]{1,50}$"
_TAG = re.compile(TAG_PATTERN)


def normalize_tag(tag: str) -> str:
    """The stored form of a tag; 400 naming the tag when it breaks the rules."""
    if not isinstance(tag, str):
        raise BadRequest("tags must be strings")
    value = tag.lower()
    if not _TAG.fullmatch(value):
        raise BadRequest(
            f"tag {tag[:60]!r} is not valid: tags are 1-{MAX_TAG_LENGTH} characters of a-z, 0-9, _ and -"
        )
    return value


def normalize_tags(tags: Iterable[str]) -> list[str]:
    """Normalised tags in their given order, duplicates dropped; at most MAX_TAGS."""
    result: list[str] = []
    for tag in tags:
        value = normalize_tag(tag)
        if value not in result:
            result.append(value)
    if len(result) > MAX_TAGS:
        raise BadRequest(f"a conversation has at most {MAX_TAGS} tags; this would give it {len(result)}")
    return result


def tags_of(row: dict[str, Any]) -> list[str]:
    raw = row.get("tags") or "[]"
    return list(msgspec.json.decode(raw)) if isinstance(raw, (str, bytes)) else list(raw)


async def store_tags(row: dict[str, Any], tags: list[str]) -> None:
    """Write `tags` as the conversation's tags (column and filter rows); inside a transaction."""
    before = set(tags_of(row))
    await Conversation.update({Conversation.tags: msgspec.json.encode(tags).decode()}).where(
        Conversation.id == row["id"]
    )
    gone = [t for t in before if t not in tags]
    if gone:
        await ConversationTag.delete().where(
            ConversationTag.conversation_id == row["id"], ConversationTag.tag.is_in(gone)
        )
    new = [t for t in tags if t not in before]
    if new:
        await ConversationTag.insert(
            *[
                ConversationTag(
                    id=uuid.uuid4(), customer_id=row["customer_id"], conversation_id=row["id"], tag=t
                )
                for t in new
            ]
        )


def tag_filter(customer_id: UUID, tag: str):
    """A condition on conversations: tagged `tag` (normalised here; a bad tag is 400).

    PostgreSQL reads the GIN index over the tags column (migration 0015), which its planner
    prefers to a sequential scan even for common tags; SQLite reads the `conversation_tags` table."""
    value = normalize_tag(tag)
    if isinstance(current_engine(), PostgresEngine):
        return WhereRaw("conversations.tags::jsonb @> {}::jsonb", msgspec.json.encode([value]).decode())
    tagged = ConversationTag.select(ConversationTag.conversation_id).where(
        ConversationTag.customer_id == customer_id, ConversationTag.tag == value
    )
    return Conversation.id.is_in(tagged)
