"""Messages of a conversation: listing, reading and (soft) deletion."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from hub import events
from hub.conversations import forget_last_message, get_conversation
from hub.db import current_engine, transaction
from hub.errors import Conflict
from hub.models import message_out
from hub.pagination import fetch_page
from hub.repo import get_scoped, now
from hub.tables import Conversation, Message, StoredMedia


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


async def delete_message(customer_id: UUID, message_id: UUID) -> dict[str, Any]:
    """Soft delete: text and medias blanked, the media the hub keeps for it removed, the row kept
    (ordering, provider-id dedupe), and a `conversation_message_deleted` event. A message still
    being sent is 409: its send reads them."""
    async with transaction(current_engine()):
        row = await get_message(customer_id, message_id)
        if row["status"] == "progressing":
            raise Conflict("the message is still being sent; delete it once it is done or failed")
        stamp = now()
        deleted = (
            await Message.update(
                {Message.text: "", Message.medias: "[]", Message.tm_delete: stamp, Message.tm_update: stamp}
            )
            .where(Message.id == message_id, Message.tm_delete.is_null(), Message.status != "progressing")
            .returning(*Message.all_columns())
        )
        if not deleted:  # a concurrent delete or a status change won
            raise Conflict("the message changed meanwhile; read it again")
        row = deleted[0]
        await StoredMedia.delete().where(StoredMedia.message_id == message_id)
        await forget_last_message(row["conversation_id"], message_id)
        conversation = (
            await Conversation.select(Conversation.owner_id)
            .where(Conversation.id == row["conversation_id"])
            .first()
        )
        await events.emit(
            events.event_row(
                events.MESSAGE_DELETED,
                customer_id,
                message_out(row),
                row["conversation_id"],
                conversation["owner_id"] if conversation else None,
            )
        )
    return row
