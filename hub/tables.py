"""Piccolo tables of the hub. Schema changes go through hub/piccolo_migrations."""

from piccolo.columns import (
    UUID,
    Boolean,
    Bytea,
    Integer,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

NIL_UUID_TEXT = "00000000-0000-0000-0000-000000000000"


def Reference(**kwargs) -> UUID:
    """The id of another row (tenant, conversation, ...): no default, so an insert that forgets
    it fails instead of getting Piccolo's random UUID (a random tenant)."""
    return UUID(default=None, null=False, **kwargs)


class Customer(Table, tablename="customers"):
    id = UUID(primary_key=True)
    name = Varchar(length=255)
    webhook_uri = Text(default="")
    webhook_method = Varchar(length=10, default="POST")
    webhook_secret = Text(default="")
    # After a rotation the previous secret still signs (a second signature) until this time.
    webhook_secret_previous = Text(default="")
    webhook_secret_previous_until = Timestamptz(null=True, default=None)
    # Set when the endpoint answered 410 Gone: nothing is sent until the next PUT re-enables it.
    webhook_disabled_at = Timestamptz(null=True, default=None)
    webhook_disabled_reason = Text(default="")
    # Open conversations with no message in either direction for this long are closed; 0 = never.
    inactivity_close_s = Integer(default=0)
    # Whether an address of a contact joins that contact's open conversation (`contact`) or
    # opens its own (`address`); see hub/participants.py.
    conversation_routing = Varchar(length=16, default="contact")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Agent(Table, tablename="agents"):
    id = UUID(primary_key=True)
    customer_id = Reference(index=True)
    username = Varchar(length=255, unique=True)
    password_hash = Text()
    name = Varchar(length=255, default="")
    detail = Text(default="")
    permission = Integer(default=0)
    # Bumped by every password change; tokens carrying an older version are refused.
    token_version = Integer(default=0)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Contact(Table, tablename="contacts"):
    id = UUID(primary_key=True)
    customer_id = Reference(index=True)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class ContactAddress(Table, tablename="contact_addresses"):
    """One row per address of a contact, keyed by the normalised target for title lookups."""

    id = UUID(primary_key=True)
    contact_id = Reference(index=True)
    customer_id = Reference()
    type = Varchar(length=16)
    target = Varchar(length=255)
    position = Integer(default=0)


class Account(Table, tablename="accounts"):
    id = UUID(primary_key=True)
    customer_id = Reference(index=True)
    type = Varchar(length=16)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    number = Varchar(length=32, default="")
    sid = Varchar(length=255, default="")
    secret = Text(default="")
    token = Text(default="")
    message_flow_id = UUID(null=True, default=None)
    # Email accounts (migration 0012): the mailbox, and the SMTP relay that sends from it.
    address = Varchar(length=255, default="")
    smtp_host = Varchar(length=255, default="")
    smtp_port = Integer(default=0)
    smtp_security = Varchar(length=16, default="")
    smtp_username = Varchar(length=255, default="")
    smtp_password = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Conversation(Table, tablename="conversations"):
    id = UUID(primary_key=True)
    customer_id = Reference()
    account_id = Reference()
    type = Varchar(length=16)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    owner_type = Varchar(length=16, default="")
    owner_id = UUID(default=NIL_UUID_TEXT)
    # Room key parts; the full addresses live in the JSON columns beside them.
    self_target = Varchar(length=255)
    peer_target = Varchar(length=255)
    self_address = Text(default="{}")
    peer_address = Text(default="{}")
    # JSON list of the conversation's tags, as shown; `conversation_tags` indexes them for filters.
    tags = Text(default="[]")
    status = Varchar(length=16, default="open")
    tm_closed = Timestamptz(null=True, default=None)
    # api, flow or inactivity; "" while open.
    closed_reason = Varchar(length=16, default="")
    # A flow's free-text reason for closing (conversation_close {reason}); "" otherwise.
    closed_note = Varchar(length=200, default="")
    # The closed conversation this one continues (set when a message reopened the talk).
    previous_conversation_id = UUID(null=True, default=None)
    # Kept by the inbound and outbound transactions, for inbox lists: JSON of the latest message.
    tm_last_message = Timestamptz(null=True, default=None)
    last_message = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class ConversationTag(Table, tablename="conversation_tags"):
    """One row per tag of a conversation: the index behind `GET /conversations?tag=`."""

    id = UUID(primary_key=True)
    customer_id = Reference()
    conversation_id = Reference()
    tag = Varchar(length=50)
    # The conversation's tm_create (it never changes): the tag's rows in list order (migration 0019).
    tm_create = Timestamptz(null=True, default=None)


class Message(Table, tablename="messages"):
    id = UUID(primary_key=True)
    customer_id = Reference()
    conversation_id = Reference()
    account_id = Reference()
    direction = Varchar(length=16)
    status = Varchar(length=16)
    source = Text(default="{}")
    destination = Text(default="{}")
    text = Text(default="")
    medias = Text(default="[]")
    provider_message_id = Varchar(length=255, null=True, default=None)
    activeflow_id = UUID(null=True, default=None)
    reason = Text(default="")
    idempotency_key = Varchar(length=255, null=True, default=None)
    # What the provider last said about an outgoing message (queued, sent, delivered,
    # undelivered, failed); "" before it said anything. `status` stays the hub's own.
    delivery_status = Varchar(length=16, default="")
    tm_delivered = Timestamptz(null=True, default=None)
    # The provider's raw message type (LINE: text, image, sticker, location...); "" = plain text.
    content_type = Varchar(length=32, default="")
    # Every provider id of the message (a LINE message of more than 5 objects takes several
    # pushes), JSON; `provider_message_id` is the first.
    provider_message_ids = Text(default="[]")
    # The participant the message came from or went to, and its channel (the account type:
    # sms, line, email). Null / "" only on rows from before participants that had no account.
    participant_id = UUID(null=True, default=None)
    channel = Varchar(length=16, default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Participant(Table, tablename="participants"):
    """One way to reach a conversation's peer: an address at one of our accounts. Room matching
    goes through the live ones (unique per customer, account, address among open conversations:
    migration 0013b); the conversation's own account_id/self/peer are its first participant's."""

    id = UUID(primary_key=True)
    customer_id = Reference()
    conversation_id = Reference()
    account_id = Reference()
    # tel | line | email, and the normalised target (E.164, LINE id, lowercase email).
    address_type = Varchar(length=16)
    target = Varchar(length=255)
    target_name = Varchar(length=255, default="")
    # The full addresses, JSON: the peer's (`address`) and ours when sending to it (`self_address`).
    address = Text(default="{}")
    self_address = Text(default="{}")
    # The contact that held the address when the participant was made.
    contact_id = UUID(null=True, default=None)
    # Copied from the conversation ("open" until conversations can close): the unique index
    # covers open conversations only.
    conversation_status = Varchar(length=16, default="open")
    # The latest inbound message from this participant; outbound selection prefers the latest.
    tm_last_active = Timestamptz(null=True, default=None)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Flow(Table, tablename="flows"):
    id = UUID(primary_key=True)
    customer_id = Reference(index=True)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    # The validated action list, JSON.
    actions = Text(default="[]")
    # The current row of flow_versions; each change of the actions adds one.
    version = Integer(default=1)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class FlowVersion(Table, tablename="flow_versions"):
    """Every action list a flow had: a run reads the version it started with, however the flow
    changes meanwhile. Unique on (flow_id, version) (migration 0008b)."""

    flow_id = UUID()
    version = Integer(default=1)
    actions = Text(default="[]")
    tm_create = Timestamptz(default=TimestamptzNow())


class Activeflow(Table, tablename="activeflows"):
    """One run of a flow. Written `running` in the transaction that stored its trigger, so a
    crash before the workflow start is repaired by recovery (`started` still false)."""

    id = UUID(primary_key=True)
    customer_id = Reference()
    flow_id = Reference()
    flow_name = Varchar(length=255, default="")
    conversation_id = Reference()
    account_id = Reference()
    message_id = UUID(null=True, default=None)
    workflow_id = Varchar(length=128, unique=True)
    # The flow_versions row the run executes. 0: a run from before flow versions, whose actions
    # were copied into `actions`.
    flow_version = Integer(default=0)
    actions = Text(default="[]")
    status = Varchar(length=16, default="running")
    started = Boolean(default=False)
    current_action_id = Varchar(length=64, default="")
    executed_actions = Text(default="[]")
    variables = Text(default="{}")
    reason = Text(default="")
    # Failed workflow starts by recovery; at `recovery_max_start_attempts` the run is `failed`.
    start_attempts = Integer(default=0)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_end = Timestamptz(null=True, default=None)
    # The run whose `flow_start` started this one (a sub-flow); NULL for a run a message started.
    parent_id = UUID(null=True, default=None)
    # From its first wait_for_reply until it ends (or another run supersedes it), the run takes
    # its conversation's inbound messages (hub/dialogues.py). At most one per conversation.
    in_dialogue = Boolean(default=False)


class DialogueMessage(Table, tablename="dialogue_messages"):
    """An inbound message routed to a run in dialogue (its inbox), recorded in the inbound
    transaction. `position` is 1, 2, 3... per run in commit order; `delivered` once the signal to
    the workflow was confirmed (recovery re-signals the others)."""

    id = UUID(primary_key=True)
    customer_id = Reference()
    activeflow_id = Reference()
    conversation_id = Reference()
    message_id = Reference()
    position = Integer()
    # routed (waiting for a wait), consumed (a wait took it), unconsumed (the run ended first).
    state = Varchar(length=16, default="routed")
    delivered = Boolean(default=False)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())


class Event(Table, tablename="events"):
    """The outbox: every change, written in the transaction that made it, in `seq` order."""

    seq = Serial(primary_key=True)
    id = UUID(unique=True)
    customer_id = Reference()
    conversation_id = UUID(null=True, default=None)
    owner_id = UUID(null=True, default=None)
    # The owner before the change, on events that moved the conversation to another owner: both
    # the previous and the new owner see such an event on their live stream.
    previous_owner_id = UUID(null=True, default=None)
    type = Varchar(length=64)
    data = Text()
    tm_create = Timestamptz(default=TimestamptzNow())
    # Set when the relay has published the event and queued its webhook delivery.
    relayed_at = Timestamptz(null=True, default=None)


class WebhookDelivery(Table, tablename="webhook_deliveries"):
    """One event on its way to the customer's webhook; its retry schedule lives in these columns."""

    id = UUID(primary_key=True)
    customer_id = Reference()
    # The outbox event: its id is the `webhook-id` header, stable across retries and replays.
    event_id = Reference(unique=True)
    event_seq = Integer()
    event_type = Varchar(length=64)
    conversation_id = UUID(null=True, default=None)
    # Deliveries with the same key go out in event order (the conversation, else the event).
    order_key = Reference()
    # order_key modulo 1024; a delivery shard owns the buckets equal to its number modulo shards.
    bucket = Integer(default=0)
    status = Varchar(length=16, default="pending")
    # New or replayed and not yet seen by its shard.
    fresh = Boolean(default=True)
    attempts = Integer(default=0)
    last_status_code = Integer(null=True, default=None)
    last_error = Text(default="")
    next_attempt_at = Timestamptz(null=True, default=None)
    tm_delivered = Timestamptz(null=True, default=None)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())


class EmailMessage(Table, tablename="email_messages"):
    """The email headers of a message (inbound or sent), for threading replies: the subject, the
    Message-Id (also the message's `provider_message_id`), In-Reply-To and References."""

    message_id = UUID(primary_key=True)
    customer_id = Reference()
    conversation_id = Reference(index=True)
    direction = Varchar(length=16)
    # The peer's normalised address (the sender of an inbound email, the recipient of a reply).
    peer = Varchar(length=255, default="")
    subject = Text(default="")
    header_message_id = Text(default="")
    in_reply_to = Text(default="")
    references = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())


class StoredMedia(Table, tablename="media"):
    """A file the hub keeps itself (email attachments), served at /v1.0/media/{id} to agents of
    its customer. The bytes live in the database, on PostgreSQL and SQLite alike."""

    id = UUID(primary_key=True)
    customer_id = Reference(index=True)
    conversation_id = Reference()
    message_id = Reference(index=True)
    content_type = Varchar(length=255, default="application/octet-stream")
    filename = Varchar(length=255, default="")
    size = Integer(default=0)
    data = Bytea(default=b"")
    tm_create = Timestamptz(default=TimestamptzNow())


TABLES: list[type[Table]] = [
    Customer,
    Agent,
    Contact,
    ContactAddress,
    Account,
    Conversation,
    # Without it here, hub.db.use_engine would leave tag rows on the engine first used.
    ConversationTag,
    Participant,
    Message,
    Event,
    Flow,
    FlowVersion,
    Activeflow,
    DialogueMessage,
    WebhookDelivery,
    EmailMessage,
    StoredMedia,
]

__all__ = ["TABLES", *[t.__name__ for t in TABLES]]
