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
                    id=uuid.uuid4(),
                    customer_id=row["customer_id"],
                    conversation_id=row["id"],
                    tag=t,
                    # The list's order key, for the tag's rows in list order (migration 0019).
                    tm_create=row["tm_create"],
                )
                for t in new
            ]
        )


def tagged_in_list_order(customer_id: UUID, tag: str) -> tuple[list[Any], tuple[Any, Any]]:
    """Conditions on conversations (tagged `tag`, normalised here; a bad tag is 400) joining the
    tag's `conversation_tags` rows, and the two columns of those rows to order and page by: the
    conversation's (tm_create, id) copied there (migration 0019). Ordered so, both databases walk
    the index (customer_id, tag, tm_create, conversation_id) newest first and read each listed
    conversation by its key, however rare the tag; one tag row per conversation and tag, so the
    join never repeats a conversation. (No `tm_create = conversations.tm_create` condition: the
    planners count it as one more filter and misjudge the rows, which PostgreSQL answers with a
    parallel hash join of every tagged conversation.)"""
    value = normalize_tag(tag)
    rows = Conversation.id.join_on(ConversationTag.conversation_id)
    return [rows.customer_id == customer_id, rows.tag == value], (rows.tm_create, rows.conversation_id)


def tag_filter(customer_id: UUID, tag: str):
    """A condition on conversations: tagged `tag` (normalised here; a bad tag is 400). For orders
    other than the list's (the inbox's activity order); the list joins `tagged_in_list_order`.

    PostgreSQL reads the GIN index over the tags column (migration 0015), which its planner
    prefers to a sequential scan even for common tags; SQLite reads the `conversation_tags` table."""
    value = normalize_tag(tag)
    if isinstance(current_engine(), PostgresEngine):
        return WhereRaw("conversations.tags::jsonb @> {}::jsonb", msgspec.json.encode([value]).decode())
    tagged = ConversationTag.select(ConversationTag.conversation_id).where(
        ConversationTag.customer_id == customer_id, ConversationTag.tag == value
    )
    return Conversation.id.is_in(tagged)
