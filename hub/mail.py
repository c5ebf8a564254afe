"""Email storage: the headers of email messages (threading), the media the hub keeps itself."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from hub.errors import NotFound
from hub.repo import now
from hub.tables import EmailMessage, Message, StoredMedia


async def store_inbound_email(facts: Any, files: list[Any], message: dict[str, Any]) -> None:
    """With an inbound email's message, in its transaction: its headers and its attachments
    (`facts`: hub.channels.email.EmailFacts, `files`: its InboundFiles)."""
    stamp = now()
    await EmailMessage.insert(
        EmailMessage(
            message_id=message["id"],
            customer_id=message["customer_id"],
            conversation_id=message["conversation_id"],
            direction="incoming",
            peer=facts.peer,
            subject=facts.subject,
            header_message_id=facts.message_id,
            in_reply_to=facts.in_reply_to,
            references=facts.references,
            tm_create=stamp,
        )
    )
    if files:
        await StoredMedia.insert(
            *[
                StoredMedia(
                    id=f.id,
                    customer_id=message["customer_id"],
                    conversation_id=message["conversation_id"],
                    message_id=message["id"],
                    content_type=f.content_type,
                    filename=f.filename,
                    size=len(f.data),
                    data=f.data,
                    tm_create=stamp,
                )
                for f in files
            ]
        )


async def record_own_subject(message: dict[str, Any], peer: str, subject: str) -> None:
    """An outgoing email that carries its own subject (a flow's message_send `subject`): its
    headers row, written with the message (in its transaction) and completed once the relay took
    it (record_sent_email). Later replies of the conversation thread to this subject."""
    await EmailMessage.insert(
        EmailMessage(
            message_id=message["id"],
            customer_id=message["customer_id"],
            conversation_id=message["conversation_id"],
            direction="outgoing",
            peer=peer.strip().lower(),
            subject=" ".join(subject.split())[:998],
            tm_create=now(),
        )
    ).on_conflict(action="DO NOTHING")


async def own_subject(message_id: UUID) -> str:
    """The subject an outgoing email was written with ("" for a reply, which threads)."""
    row = (
        await EmailMessage.select(EmailMessage.subject)
        .where(
            EmailMessage.message_id == message_id,
            EmailMessage.direction == "outgoing",
            EmailMessage.header_message_id == "",
        )
        .first()
    )
    return row["subject"] if row else ""


async def thread_for(conversation_id: UUID, peer: str) -> dict[str, str]:
    """What a reply to `peer` in this conversation threads to: the subject of the conversation's
    first email, and the Message-Id and References of the peer's last one."""
    first = (
        await EmailMessage.select(EmailMessage.subject)
        .where(EmailMessage.conversation_id == conversation_id, EmailMessage.subject != "")
        .order_by(EmailMessage.tm_create)
        .first()
    )
    last = (
        await EmailMessage.select(EmailMessage.header_message_id, EmailMessage.references)
        .where(
            EmailMessage.conversation_id == conversation_id,
            EmailMessage.direction == "incoming",
            EmailMessage.peer == peer.strip().lower(),
        )
        .order_by(EmailMessage.tm_create, ascending=False)
        .first()
    )
    return {
        "subject": first["subject"] if first else "",
        "in_reply_to": last["header_message_id"] if last else "",
        "references": last["references"] if last else "",
    }


async def record_sent_email(
    message_id: UUID, peer: str, subject: str, thread: dict[str, str], header_id: str
) -> None:
    """The headers of a reply the relay accepted (once: a repeated attempt changes nothing)."""
    row = (
        await Message.select(Message.customer_id, Message.conversation_id)
        .where(Message.id == message_id)
        .first()
    )
    if row is None:
        return
    if await EmailMessage.exists().where(EmailMessage.message_id == message_id):
        # Written with its own subject (record_own_subject): the relay's headers complete it.
        await EmailMessage.update(
            {
                EmailMessage.header_message_id: header_id,
                EmailMessage.in_reply_to: thread.get("in_reply_to", ""),
                EmailMessage.references: thread.get("references", ""),
            }
        ).where(EmailMessage.message_id == message_id, EmailMessage.header_message_id == "")
        return
    await EmailMessage.insert(
        EmailMessage(
            message_id=message_id,
            customer_id=row["customer_id"],
            conversation_id=row["conversation_id"],
            direction="outgoing",
            peer=peer.strip().lower(),
            subject=subject,
            header_message_id=header_id,
            in_reply_to=thread.get("in_reply_to", ""),
            references=thread.get("references", ""),
            tm_create=now(),
        )
    ).on_conflict(action="DO NOTHING")


async def get_media(customer_id: UUID, media_id: UUID) -> dict[str, Any]:
    """A stored media of this customer (404 for any other customer's, like a missing one)."""
    row = (
        await StoredMedia.select()
        .where(StoredMedia.id == media_id, StoredMedia.customer_id == customer_id)
        .first()
    )
    if row is None:
        raise NotFound(f"media {media_id} not found")
    return row


def media_id_of(url: str, public_url: str = "") -> UUID | None:
    """The id of a hub media URL (`/v1.0/media/{id}`, or under the hub's public URL), else None."""
    path = url
    if public_url and url.startswith(public_url.rstrip("/") + "/"):
        path = url[len(public_url.rstrip("/")) :]
    if not path.startswith("/v1.0/media/"):
        return None
    try:
        return uuid.UUID(path.removeprefix("/v1.0/media/").split("?", 1)[0])
    except ValueError:
        return None
