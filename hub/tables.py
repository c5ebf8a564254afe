"""Piccolo tables of the hub. Schema changes go through hub/piccolo_migrations."""

from piccolo.columns import (
    UUID,
    Boolean,
    Integer,
    Serial,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

NIL_UUID_TEXT = "00000000-0000-0000-0000-000000000000"


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
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Agent(Table, tablename="agents"):
    id = UUID(primary_key=True)
    customer_id = UUID(index=True)
    username = Varchar(length=255, unique=True)
    password_hash = Text()
    name = Varchar(length=255, default="")
    detail = Text(default="")
    permission = Integer(default=0)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Contact(Table, tablename="contacts"):
    id = UUID(primary_key=True)
    customer_id = UUID(index=True)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class ContactAddress(Table, tablename="contact_addresses"):
    """One row per address of a contact, keyed by the normalised target for title lookups."""

    id = UUID(primary_key=True)
    contact_id = UUID(index=True)
    customer_id = UUID()
    type = Varchar(length=16)
    target = Varchar(length=255)
    position = Integer(default=0)


class Account(Table, tablename="accounts"):
    id = UUID(primary_key=True)
    customer_id = UUID(index=True)
    type = Varchar(length=16)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    number = Varchar(length=32, default="")
    sid = Varchar(length=255, default="")
    secret = Text(default="")
    token = Text(default="")
    message_flow_id = UUID(null=True, default=None)
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Conversation(Table, tablename="conversations"):
    id = UUID(primary_key=True)
    customer_id = UUID()
    account_id = UUID()
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
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Message(Table, tablename="messages"):
    id = UUID(primary_key=True)
    customer_id = UUID()
    conversation_id = UUID()
    account_id = UUID()
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
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Flow(Table, tablename="flows"):
    id = UUID(primary_key=True)
    customer_id = UUID(index=True)
    name = Varchar(length=255, default="")
    detail = Text(default="")
    # The validated action list, JSON.
    actions = Text(default="[]")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_delete = Timestamptz(null=True, default=None)


class Activeflow(Table, tablename="activeflows"):
    """One run of a flow. Written `running` in the transaction that stored its trigger, so a
    crash before the workflow start is repaired by recovery (`started` still false)."""

    id = UUID(primary_key=True)
    customer_id = UUID()
    flow_id = UUID()
    flow_name = Varchar(length=255, default="")
    conversation_id = UUID()
    account_id = UUID()
    message_id = UUID(null=True, default=None)
    workflow_id = Varchar(length=128, unique=True)
    # The flow's actions as they were when the run began.
    actions = Text(default="[]")
    status = Varchar(length=16, default="running")
    started = Boolean(default=False)
    current_action_id = Varchar(length=64, default="")
    executed_actions = Text(default="[]")
    variables = Text(default="{}")
    reason = Text(default="")
    tm_create = Timestamptz(default=TimestamptzNow())
    tm_update = Timestamptz(default=TimestamptzNow())
    tm_end = Timestamptz(null=True, default=None)


class Event(Table, tablename="events"):
    """The outbox: every change, written in the transaction that made it, in `seq` order."""

    seq = Serial(primary_key=True)
    id = UUID(unique=True)
    customer_id = UUID()
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
    customer_id = UUID()
    # The outbox event: its id is the `webhook-id` header, stable across retries and replays.
    event_id = UUID(unique=True)
    event_seq = Integer()
    event_type = Varchar(length=64)
    conversation_id = UUID(null=True, default=None)
    # Deliveries with the same key go out in event order (the conversation, else the event).
    order_key = UUID()
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


TABLES: list[type[Table]] = [
    Customer,
    Agent,
    Contact,
    ContactAddress,
    Account,
    Conversation,
    Message,
    Event,
    Flow,
    Activeflow,
    WebhookDelivery,
]

__all__ = ["TABLES", *[t.__name__ for t in TABLES]]
