"""/v1.0/conversations (and the /v1.0/service_agents mirror): read, assign, unassign, delete,
participants, messages."""

import logging
from typing import Annotated, Literal
from uuid import UUID

from litestar import Controller, Request, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from activities.lifecycle import tell_stopped
from api import temporal
from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import (
    ConversationPage,
    ConversationUpdate,
    MessageCreate,
    MessagePage,
    ParticipantCreate,
    ParticipantPage,
    Tag,
    TagsAdd,
    given,
)
from hub import conversations, lifecycle, messages, outbound, participants
from hub.addresses import Address
from hub.models import (
    ConversationOut,
    Media,
    MessageOut,
    ParticipantOut,
    conversation_out,
    message_out,
    participant_out,
)
from hub.permissions import check_list_owner_filter

log = logging.getLogger("hub.api")

OwnerFilter = Annotated[
    UUID | None,
    QueryParameter(
        name="owner_id",
        description="Only conversations of this agent. Required (own id) for agents without "
        "admin/manager permission; the nil uuid or omission disables the filter.",
    ),
]

StatusFilter = Annotated[
    Literal["open", "closed"] | None, QueryParameter(name="status", description="Only open or only closed")
]
AccountFilter = Annotated[
    UUID | None,
    QueryParameter(
        name="account_id", description="Only conversations whose first participant is on this account"
    ),
]
TypeFilter = Annotated[
    Literal[conversations.CONVERSATION_TYPES] | None,  # type: ignore[valid-type]
    QueryParameter(name="type", description="Only conversations of this type"),
]
PeerFilter = Annotated[
    str | None,
    QueryParameter(
        name="peer",
        max_length=320,
        description="Only conversations with this address among their participants: a phone number "
        "(any spelling, compared as E.164), an email address (any case) or a LINE id",
    ),
]
TagFilter = Annotated[
    Tag | None, QueryParameter(name="tag", description="Only conversations with this tag (any case)")
]


IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        max_length=255,
        required=False,
        description="A retry with the same key returns the first message and sends nothing new",
    ),
]


async def send_message(
    request: Request, caller: Caller, conversation_id: UUID, data: MessageCreate, key: str
) -> MessageOut:
    medias = [Media(type=m.type, url=m.url) for m in data.medias]
    message, created = await outbound.create_outgoing(
        caller.customer_id,
        conversation_id,
        data.text,
        medias,
        idempotency_key=key,
        participant_id=data.participant_id,
    )
    if created:
        try:
            await temporal.start_send(request.app.state.temporal, request.app.state.settings, message)
        except Exception as exc:  # the message is stored; the worker's recovery starts it later
            if not temporal.is_unavailable(exc):
                raise
            log.warning(
                "send %s not started now (%s); recovery will start it", message["id"], exc, exc_info=exc
            )
    return message_out(message)


async def _update(caller: Caller, conversation_id: UUID, data: ConversationUpdate) -> ConversationOut:
    caller.require_admin_or_manager()
    row = await conversations.update_conversation(caller.customer_id, conversation_id, given(data))
    return await participants.conversation_with_participants(row)


async def _unassign(caller: Caller, conversation_id: UUID) -> ConversationOut:
    row = await conversations.unassign(
        caller.customer_id, conversation_id, caller.agent_id, caller.permission
    )
    return await participants.conversation_with_participants(row)


class ConversationController(Controller):
    path = "/v1.0/conversations"
    tags = ["conversations"]

    @get("/")
    async def list_conversations(
        self,
        caller: NamedDependency[Caller],
        owner_id: OwnerFilter = None,
        tag: TagFilter = None,
        status: StatusFilter = None,
        account_id: AccountFilter = None,
        type: TypeFilter = None,  # noqa: A002 - the documented query parameter
        peer: PeerFilter = None,
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> ConversationPage:
        owner = check_list_owner_filter(caller.agent_id, caller.permission, owner_id)
        filters = conversations.ListFilters(
            status=status, tag=tag, account_id=account_id, type=type, peer=peer
        )
        result, token = await conversations.list_page(
            caller.customer_id, owner, page_size, page_token, filters=filters
        )
        return ConversationPage(result=result, next_page_token=token)

    @get("/{conversation_id:str}", summary="A conversation with its live participants")
    async def get_conversation(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        row = await conversations.get_conversation(caller.customer_id, conversation_id)
        return await participants.conversation_with_participants(row)

    @get("/{conversation_id:str}/participants", summary="The conversation's live participants")
    async def list_participants(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> ParticipantPage:
        rows, token = await participants.list_participants(
            caller.customer_id, conversation_id, page_size, page_token
        )
        return ParticipantPage(result=[participant_out(r) for r in rows], next_page_token=token)

    @post(
        "/{conversation_id:str}/participants",
        status_code=200,
        summary="Add a participant (owner or admin/manager)",
        description="`account_id`: a live account of the caller's customer whose channel reaches the "
        "address (sms: tel, line: line, email: email). 400 for a bad address or such an account; 409 "
        "when that account and address are live in an open conversation already. Emits "
        "`conversation_updated` with the participants.",
    )
    async def add_participant(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        data: JSONBody[ParticipantCreate],
    ) -> ParticipantOut:
        given_address = data.address
        address = Address(
            type=given_address.type, target=given_address.target, target_name=given_address.target_name
        )
        row = await participants.add_participant(
            caller.customer_id, conversation_id, caller.agent_id, caller.permission, data.account_id, address
        )
        return participant_out(row)

    @delete(
        "/{conversation_id:str}/participants/{participant_id:str}",
        status_code=200,
        summary="Remove a participant (owner or admin/manager); the last one cannot be removed (409)",
        description="Its next inbound message opens a new conversation. Emits `conversation_updated`.",
    )
    async def remove_participant(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        participant_id: FromPath[UUID],
    ) -> ParticipantOut:
        row = await participants.remove_participant(
            caller.customer_id, conversation_id, participant_id, caller.agent_id, caller.permission
        )
        return participant_out(row)

    @put("/{conversation_id:str}", summary="Update name, detail or owner_id (admin/manager only)")
    async def update_conversation(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        data: JSONBody[ConversationUpdate],
    ) -> ConversationOut:
        return await _update(caller, conversation_id, data)

    @post("/{conversation_id:str}/unassign", status_code=200, summary="Unassign (owner or admin/manager)")
    async def unassign(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        return await _unassign(caller, conversation_id)

    @post(
        "/{conversation_id:str}/tags",
        status_code=200,
        summary="Add tags (owner or admin/manager); the conversation's other tags stay",
    )
    async def add_tags(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID], data: JSONBody[TagsAdd]
    ) -> ConversationOut:
        row = await conversations.change_tags(
            caller.customer_id, conversation_id, caller.agent_id, caller.permission, add=data.tags
        )
        return conversation_out(row)

    @delete(
        "/{conversation_id:str}/tags/{tag:str}",
        status_code=200,
        summary="Remove a tag (owner or admin/manager); removing an absent tag changes nothing",
    )
    async def remove_tag(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID], tag: FromPath[Tag]
    ) -> ConversationOut:
        row = await conversations.change_tags(
            caller.customer_id, conversation_id, caller.agent_id, caller.permission, remove=[tag]
        )
        return conversation_out(row)

    @post(
        "/{conversation_id:str}/close",
        status_code=200,
        summary="Close (owner or admin/manager): no new messages match it; its running activeflows stop",
    )
    async def close(
        self, request: Request, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        closed = await lifecycle.close_conversation(
            caller.customer_id, conversation_id, "api", caller.agent_id, caller.permission
        )
        await tell_stopped(request.app.state.temporal, closed.stopped_workflow_ids)
        return conversation_out(closed.conversation)

    @post(
        "/{conversation_id:str}/reopen",
        status_code=200,
        summary="Reopen (owner or admin/manager); 409 when a participant is in another open conversation",
    )
    async def reopen(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        row = await lifecycle.reopen_conversation(
            caller.customer_id, conversation_id, caller.agent_id, caller.permission
        )
        return conversation_out(row)

    @delete("/{conversation_id:str}", status_code=200, summary="Soft delete (admin/manager only)")
    async def delete_conversation(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        caller.require_admin_or_manager()
        return conversation_out(await conversations.delete_conversation(caller.customer_id, conversation_id))

    @get("/{conversation_id:str}/messages")
    async def list_messages(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> MessagePage:
        rows, token = await messages.list_messages(caller.customer_id, conversation_id, page_size, page_token)
        return MessagePage(result=[message_out(r) for r in rows], next_page_token=token)

    @post(
        "/{conversation_id:str}/messages",
        status_code=200,
        summary="Send a message; it is stored `progressing` and delivered asynchronously",
        description="Through `participant_id` when given, else through the participant whose inbound "
        "message is the latest among those that can carry it (media support, text limit, a live "
        "account with credentials); 400 says why none can. The message records `participant_id`, "
        "`account_id` and `channel`.",
    )
    async def create_message(
        self,
        request: Request,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        data: JSONBody[MessageCreate],
        idempotency_key: IdempotencyKey = None,
    ) -> MessageOut:
        return await send_message(request, caller, conversation_id, data, idempotency_key or "")


class ServiceAgentConversationController(Controller):
    path = "/v1.0/service_agents/conversations"
    tags = ["service_agents"]

    @put("/{conversation_id:str}", summary="Same as PUT /v1.0/conversations/{id} (admin/manager only)")
    async def update_conversation(
        self,
        caller: NamedDependency[Caller],
        conversation_id: FromPath[UUID],
        data: JSONBody[ConversationUpdate],
    ) -> ConversationOut:
        return await _update(caller, conversation_id, data)

    @post(
        "/{conversation_id:str}/unassign",
        status_code=200,
        summary="Same as POST /v1.0/conversations/{id}/unassign",
    )
    async def unassign(
        self, caller: NamedDependency[Caller], conversation_id: FromPath[UUID]
    ) -> ConversationOut:
        return await _unassign(caller, conversation_id)


class MessageController(Controller):
    path = "/v1.0/conversation_messages"
    tags = ["messages"]

    @get("/{message_id:str}")
    async def get_message(self, caller: NamedDependency[Caller], message_id: FromPath[UUID]) -> MessageOut:
        return message_out(await messages.get_message(caller.customer_id, message_id))

    @delete(
        "/{message_id:str}",
        status_code=200,
        summary="Soft delete (admin/manager only): text and medias blanked, the message leaves lists",
    )
    async def delete_message(self, caller: NamedDependency[Caller], message_id: FromPath[UUID]) -> MessageOut:
        caller.require_admin_or_manager()
        return message_out(await messages.delete_message(caller.customer_id, message_id))
