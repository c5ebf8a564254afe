"""Participants (contract section 8) at the repository level, each test on PostgreSQL and SQLite:
room matching over live participants, contact routing, removal, contacts' unique addresses,
concurrency, outbound channel selection and the flow variables.

Cross-channel tests run SMS first, then each channel of SECOND_CHANNELS: LINE today; an email
channel is one more entry there (an account maker, an inbound maker, a contact address)."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
import pytest

from hub import accounts, activeflows, contacts, conversations, outbound, participants, webhooks
from hub.actions import ActionIn
from hub.addresses import Address
from hub.errors import BadRequest, Conflict, NotFound
from hub.flows import create_flow
from hub.inbound import InboundMessage, store_inbound
from hub.models import Media
from hub.tables import Activeflow, Conversation, Event, Message, Participant
from tests.helpers import make_tenant


def sms_inbound(account: dict, sender: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(
        account=account,
        peer=Address(type="tel", target=sender),
        self_address=Address(type="tel", target=account["number"], name=account["name"]),
        provider_message_id="SM" + uuid.uuid4().hex,
        text=text,
    )


@dataclass
class Channel:
    """A second channel for cross-channel tests."""

    name: str  # the account type and message channel
    address_type: str
    make_account: Callable[[uuid.UUID], Awaitable[dict]]
    new_target: Callable[[], str]
    inbound: Callable[[dict, str, str], InboundMessage]


async def _line_account(customer_id: uuid.UUID) -> dict:
    return await accounts.create_account(
        customer_id, {"type": "line", "name": "LINE channel", "secret": "s", "token": "t"}
    )


def _line_inbound(account: dict, user_id: str, text: str = "hello") -> InboundMessage:
    return InboundMessage(
        account=account,
        peer=Address(type="line", target=user_id),
        self_address=Address(type="line", target=str(account["id"]), name=account["name"]),
        provider_message_id=uuid.uuid4().hex,
        text=text,
    )


LINE = Channel("line", "line", _line_account, lambda: "U" + secrets.token_hex(16), _line_inbound)
SECOND_CHANNELS = [pytest.param(LINE, id="line")]


def new_number() -> str:
    return "+1415" + f"{secrets.randbelow(10**7):07d}"


async def live_of(conversation_id) -> list[dict]:
    return await participants.participants_of(conversation_id)


async def conversation_ids(customer_id) -> set:
    rows = await Conversation.select(Conversation.id).where(
        Conversation.customer_id == customer_id, Conversation.tm_delete.is_null()
    )
    return {r["id"] for r in rows}


async def events_of(customer_id, event_type: str) -> list[dict]:
    rows = (
        await Event.select(Event.data)
        .where(Event.customer_id == customer_id, Event.type == event_type)
        .order_by(Event.seq)
    )
    return [msgspec.json.decode(r["data"]) for r in rows]


@dataclass
class Pair:
    """A tenant whose contact has a phone number and an address on the second channel."""

    tenant: object
    second_account: dict
    number: str
    second_target: str
    contact_id: uuid.UUID


async def pair(channel: Channel, routing: str = "contact") -> Pair:
    tenant = await make_tenant()
    second_account = await channel.make_account(tenant.customer_id)
    number, second_target = new_number(), channel.new_target()
    contact = await contacts.create_contact(
        tenant.customer_id,
        "Alice",
        "",
        [{"type": "tel", "target": number}, {"type": channel.address_type, "target": second_target}],
    )
    if routing != "contact":
        await webhooks.configure(tenant.customer_id, {"conversation_routing": routing}, allow_private=True)
    return Pair(tenant, second_account, number, second_target, contact.id)


# ---------------------------------------------------------------------------------- room matching


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_a_contact_continues_on_another_channel_in_the_same_conversation(any_engine, channel):
    p = await pair(channel)
    first = await store_inbound(sms_inbound(p.tenant.account, p.number, "by sms"))
    second = await store_inbound(channel.inbound(p.second_account, p.second_target, "on the other channel"))

    assert first.conversation_created and not second.conversation_created
    assert second.conversation["id"] == first.conversation["id"]
    conversation_id = first.conversation["id"]
    live = await live_of(conversation_id)
    assert [(r["account_id"], r["address_type"], r["target"]) for r in live] == [
        (p.tenant.account["id"], "tel", p.number),
        (p.second_account["id"], channel.address_type, p.second_target),
    ]
    assert all(r["contact_id"] == p.contact_id for r in live)
    # The first participant keeps existing clients' view: account, type, self, peer.
    row = await conversations.get_conversation(p.tenant.customer_id, conversation_id)
    assert (row["account_id"], row["type"], row["peer_target"]) == (
        p.tenant.account["id"],
        "message",
        p.number,
    )
    assert row["name"] == f"SMS \u00b7 Alice ({p.number})"
    # Each message records the participant and channel it came through.
    messages = (
        await Message.select().where(Message.conversation_id == conversation_id).order_by(Message.tm_create)
    )
    assert [(m["participant_id"], m["channel"], m["account_id"]) for m in messages] == [
        (live[0]["id"], "sms", p.tenant.account["id"]),
        (live[1]["id"], channel.name, p.second_account["id"]),
    ]
    # One conversation_created (with its first participant), one conversation_updated when the
    # second address joined, with both participants.
    [created] = await events_of(p.tenant.customer_id, "conversation_created")
    assert [x["channel"] for x in created["participants"]] == ["sms"]
    [updated] = await events_of(p.tenant.customer_id, "conversation_updated")
    assert updated["id"] == str(conversation_id)
    assert [(x["channel"], x["address"]["target"]) for x in updated["participants"]] == [
        ("sms", p.number),
        (channel.name, p.second_target),
    ]
    received = await events_of(p.tenant.customer_id, "conversation_message_received")
    assert [e["message"]["channel"] for e in received] == ["sms", channel.name]
    assert [e["message"]["participant_id"] for e in received] == [str(live[0]["id"]), str(live[1]["id"])]


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_routing_by_address_opens_a_conversation_per_address(any_engine, channel):
    p = await pair(channel, routing="address")
    first = await store_inbound(sms_inbound(p.tenant.account, p.number))
    second = await store_inbound(channel.inbound(p.second_account, p.second_target, "hi"))
    assert first.conversation_created and second.conversation_created
    assert first.conversation["id"] != second.conversation["id"]
    assert len(await live_of(first.conversation["id"])) == 1
    assert len(await live_of(second.conversation["id"])) == 1
    # And each address keeps to its own conversation afterwards.
    again = await store_inbound(channel.inbound(p.second_account, p.second_target, "again"))
    assert again.conversation["id"] == second.conversation["id"]


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_an_address_without_contact_opens_its_own_conversation(any_engine, channel):
    p = await pair(channel)
    first = await store_inbound(sms_inbound(p.tenant.account, p.number))
    stranger = await store_inbound(channel.inbound(p.second_account, channel.new_target(), "who?"))
    assert stranger.conversation_created and stranger.conversation["id"] != first.conversation["id"]
    assert [r["contact_id"] for r in await live_of(stranger.conversation["id"])] == [None]


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_a_removed_participant_next_message_opens_a_new_conversation(any_engine, channel):
    p = await pair(channel)
    tenant = p.tenant
    first = await store_inbound(sms_inbound(tenant.account, p.number))
    await store_inbound(channel.inbound(p.second_account, p.second_target, "joined"))
    conversation_id = first.conversation["id"]
    [_, joined] = await live_of(conversation_id)

    removed = await participants.remove_participant(
        tenant.customer_id, conversation_id, joined["id"], tenant.admin.id, 0x20
    )
    assert removed["tm_delete"] is not None
    assert [r["id"] for r in await live_of(conversation_id)] != [joined["id"]]
    updated = await events_of(tenant.customer_id, "conversation_updated")
    assert [len(e["participants"]) for e in updated] == [2, 1]

    # The contact still has the open conversation, but a removed address does not come back to it.
    later = await store_inbound(channel.inbound(p.second_account, p.second_target, "me again"))
    assert later.conversation_created and later.conversation["id"] != conversation_id
    # The phone number still belongs to the first conversation.
    sms = await store_inbound(sms_inbound(tenant.account, p.number, "still here"))
    assert sms.conversation["id"] == conversation_id


async def test_the_last_participant_cannot_be_removed(any_engine):
    tenant = await make_tenant()
    result = await store_inbound(sms_inbound(tenant.account, new_number()))
    [only] = await live_of(result.conversation["id"])
    with pytest.raises(Conflict, match="last participant"):
        await participants.remove_participant(
            tenant.customer_id, result.conversation["id"], only["id"], tenant.admin.id, 0x20
        )
    assert [r["id"] for r in await live_of(result.conversation["id"])] == [only["id"]]
    assert await events_of(tenant.customer_id, "conversation_updated") == []
    with pytest.raises(NotFound):
        await participants.remove_participant(
            tenant.customer_id, result.conversation["id"], uuid.uuid4(), tenant.admin.id, 0x20
        )


async def test_a_deleted_conversation_ends_its_participants(any_engine):
    tenant = await make_tenant()
    number = new_number()
    first = await store_inbound(sms_inbound(tenant.account, number))
    await conversations.delete_conversation(tenant.customer_id, first.conversation["id"])
    rows = await Participant.select().where(Participant.conversation_id == first.conversation["id"])
    assert [r["tm_delete"] is not None for r in rows] == [True]
    again = await store_inbound(sms_inbound(tenant.account, number))
    assert again.conversation_created and again.conversation["id"] != first.conversation["id"]


async def test_fifty_concurrent_first_messages_from_one_address_make_one_conversation(any_engine):
    tenant = await make_tenant()
    number = new_number()
    results = await asyncio.gather(
        *[store_inbound(sms_inbound(tenant.account, number, f"m{i}")) for i in range(50)]
    )
    assert len({r.conversation["id"] for r in results}) == 1
    assert [r.conversation_created for r in results].count(True) == 1
    [conversation_id] = await conversation_ids(tenant.customer_id)
    assert len(await live_of(conversation_id)) == 1
    assert await Message.count().where(Message.conversation_id == conversation_id) == 50
    assert len(await events_of(tenant.customer_id, "conversation_created")) == 1


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_twenty_concurrent_messages_of_one_contact_over_two_channels(any_engine, channel):
    p = await pair(channel)
    messages = []
    for i in range(10):
        messages.append(sms_inbound(p.tenant.account, p.number, f"sms {i}"))
        messages.append(channel.inbound(p.second_account, p.second_target, f"{channel.name} {i}"))
    results = await asyncio.gather(*[store_inbound(m) for m in messages])

    assert len({r.conversation["id"] for r in results}) == 1
    [conversation_id] = await conversation_ids(p.tenant.customer_id)
    live = await live_of(conversation_id)
    assert sorted(r["address_type"] for r in live) == sorted(["tel", channel.address_type])
    assert await Message.count().where(Message.conversation_id == conversation_id) == 20
    assert len(await events_of(p.tenant.customer_id, "conversation_created")) == 1
    assert len(await events_of(p.tenant.customer_id, "conversation_updated")) == 1


# ------------------------------------------------------------------------------ contacts' addresses


async def test_an_address_belongs_to_one_live_contact(any_engine):
    tenant = await make_tenant()
    number = new_number()
    alice = await contacts.create_contact(
        tenant.customer_id, "Alice", "", [{"type": "tel", "target": number}]
    )
    with pytest.raises(Conflict, match=str(alice.id)):
        # The same number written another way is the same address.
        await contacts.create_contact(
            tenant.customer_id, "Bob", "", [{"type": "tel", "target": number[:2] + " " + number[2:]}]
        )
    bob = await contacts.create_contact(
        tenant.customer_id, "Bob", "", [{"type": "email", "target": "b@x.io"}]
    )
    with pytest.raises(Conflict):
        await contacts.update_contact(
            tenant.customer_id, bob.id, {"addresses": [{"type": "tel", "target": number}]}
        )
    assert [a.target for a in (await contacts.get_contact(tenant.customer_id, bob.id)).addresses] == [
        "b@x.io"
    ]
    # Saving one's own addresses again is no conflict; one list cannot name an address twice.
    await contacts.update_contact(
        tenant.customer_id, alice.id, {"addresses": [{"type": "tel", "target": number}], "name": "Alice B"}
    )
    with pytest.raises(BadRequest, match="repeats"):
        await contacts.create_contact(
            tenant.customer_id, "Twice", "", [{"type": "email", "target": "t@x.io"}] * 2
        )
    # Another customer may have its own contact with the address; a deleted contact frees it.
    stranger = await make_tenant()
    await contacts.create_contact(stranger.customer_id, "Mallory", "", [{"type": "tel", "target": number}])
    await contacts.delete_contact(tenant.customer_id, alice.id)
    await contacts.update_contact(
        tenant.customer_id, bob.id, {"addresses": [{"type": "tel", "target": number}]}
    )


async def test_concurrent_contacts_claiming_one_address_leave_one_holder(any_engine):
    tenant = await make_tenant()
    number = new_number()
    results = await asyncio.gather(
        *[
            contacts.create_contact(tenant.customer_id, f"c{i}", "", [{"type": "tel", "target": number}])
            for i in range(8)
        ],
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, Exception))


# ------------------------------------------------------------------------- outbound channel selection


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_replies_go_through_the_last_active_participant(any_engine, channel):
    p = await pair(channel)
    customer_id = p.tenant.customer_id
    first = await store_inbound(sms_inbound(p.tenant.account, p.number))
    conversation_id = first.conversation["id"]
    await store_inbound(channel.inbound(p.second_account, p.second_target, "later"))
    sms_participant, second_participant = await live_of(conversation_id)

    reply, _ = await outbound.create_outgoing(customer_id, conversation_id, "to the latest", [])
    assert (reply["participant_id"], reply["account_id"], reply["channel"]) == (
        second_participant["id"],
        p.second_account["id"],
        channel.name,
    )
    assert msgspec.json.decode(reply["destination"])["target"] == p.second_target

    await store_inbound(sms_inbound(p.tenant.account, p.number, "back on sms"))
    reply, _ = await outbound.create_outgoing(customer_id, conversation_id, "to sms now", [])
    assert (reply["participant_id"], reply["channel"]) == (sms_participant["id"], "sms")
    assert msgspec.json.decode(reply["destination"])["target"] == p.number
    assert msgspec.json.decode(reply["source"])["target"] == p.tenant.account["number"]

    # A named participant is used whatever the activity.
    named, _ = await outbound.create_outgoing(
        customer_id, conversation_id, "named", [], participant_id=second_participant["id"]
    )
    assert named["participant_id"] == second_participant["id"] and named["channel"] == channel.name
    delivery = await outbound.load_delivery(named["id"])
    assert delivery.message["participant_id"] == second_participant["id"]
    assert (delivery.to, delivery.account["id"]) == (p.second_target, p.second_account["id"])


async def test_selection_skips_participants_that_cannot_carry_the_message(any_engine):
    p = await pair(LINE)
    customer_id = p.tenant.customer_id
    first = await store_inbound(sms_inbound(p.tenant.account, p.number))
    conversation_id = first.conversation["id"]
    await store_inbound(LINE.inbound(p.second_account, p.second_target, "later"))
    sms_participant, line_participant = await live_of(conversation_id)

    # LINE is the latest, but sends no video: the video goes by MMS.
    video = [Media(type="video/mp4", url="https://example.com/v.mp4")]
    message, _ = await outbound.create_outgoing(customer_id, conversation_id, "clip", video)
    assert (message["participant_id"], message["channel"]) == (sms_participant["id"], "sms")
    # Text longer than SMS carries goes by LINE even when SMS is the latest.
    await store_inbound(sms_inbound(p.tenant.account, p.number, "sms is latest"))
    message, _ = await outbound.create_outgoing(customer_id, conversation_id, "x" * 2000, [])
    assert (message["participant_id"], message["channel"]) == (line_participant["id"], "line")

    # Named, but unable: 400 naming why; not a participant here: 400.
    with pytest.raises(BadRequest, match="LINE cannot send video"):
        await outbound.create_outgoing(
            customer_id, conversation_id, "clip", video, participant_id=line_participant["id"]
        )
    with pytest.raises(BadRequest, match="not a live participant"):
        await outbound.create_outgoing(customer_id, conversation_id, "hi", [], participant_id=uuid.uuid4())

    # An account without credentials, or deleted, is unavailable.
    await accounts.update_account(customer_id, p.tenant.account["id"], {"token": ""})
    message, _ = await outbound.create_outgoing(customer_id, conversation_id, "short", [])
    assert message["channel"] == "line"
    await accounts.delete_account(customer_id, p.second_account["id"])
    with pytest.raises(BadRequest) as info:
        await outbound.create_outgoing(customer_id, conversation_id, "nobody", [])
    assert "no participant can carry this message" in info.value.message
    assert "no credentials" in info.value.message and "deleted" in info.value.message
    count = await Message.count().where(Message.conversation_id == conversation_id, Message.text == "nobody")
    assert count == 0


# ------------------------------------------------------------------------------------ flow variables


@pytest.mark.parametrize("channel", SECOND_CHANNELS)
async def test_flow_variables_carry_the_channel_and_the_participants(any_engine, channel):
    p = await pair(channel)
    flow = await create_flow(
        p.tenant.customer_id, "echo", "", [ActionIn(id="a", type="conversation_send", option={"text": "x"})]
    )
    await accounts.update_account(
        p.tenant.customer_id, p.second_account["id"], {"message_flow_id": flow["id"]}
    )
    second_account = await accounts.get_account(p.tenant.customer_id, p.second_account["id"])
    first = await store_inbound(sms_inbound(p.tenant.account, p.number))
    result = await store_inbound(channel.inbound(second_account, p.second_target, "flow me"))
    assert result.activeflow is not None
    row = await Activeflow.select().where(Activeflow.id == result.activeflow["id"]).first()
    variables = activeflows.stored_variables(row)
    live = await live_of(first.conversation["id"])
    assert variables["message.channel"] == channel.name
    assert variables["message.participant_id"] == str(live[1]["id"])
    assert variables["account.id"] == str(p.second_account["id"])
    assert variables["conversation.participants.count"] == "2"
    assert variables["conversation.participants.0.channel"] == "sms"
    assert variables["conversation.participants.0.address.target"] == p.number
    assert variables["conversation.participants.1.channel"] == channel.name
    assert variables["conversation.participants.1.address.target"] == p.second_target
    assert variables["conversation.participants.1.contact_id"] == str(p.contact_id)
