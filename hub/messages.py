"""Messages of a conversation: listing and reading."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hub.conversations import get_conversation
from hub.pagination import fetch_page
from hub.repo import get_scoped
from hub.tables import Message


async def list_messages(
    customer_id: UUID, conversation_id: UUID, page_size: int, page_token: str
) -> tuple[list[dict[str, Any]], str]:
    await get_conversation(customer_id, conversation_id)
    return await fetch_page(
        Message,
        [
            Message.conversation_id == conversation_id,
            Message.customer_id == customer_id,
            Message.tm_delete.is_null(),
        ],
        page_size,
        page_token,
    )


async def get_message(customer_id: UUID, message_id: UUID) -> dict[str, Any]:
    return await get_scoped(Message, customer_id, message_id)
