"""The inbound hot path's statements on PostgreSQL: plain asyncpg on the transaction's connection.

An inbound message to a conversation the address already takes part in (almost every message)
is two statements inside the inbound transaction instead of five Piccolo queries: one that marks
the participant active and locks its conversation (the lock order of hub.participants: the
participant, then the conversation), and one that inserts the message (deduplicated by the
provider's id), makes it the conversation's `last_message` and writes its outbox events, in that
order, only when the message was new. asyncpg prepares each statement once per connection.
Everything else (a new conversation, a joining address, SQLite) goes through hub.participants."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID, uuid4

from hub import participants
from hub.permissions import NIL_UUID
from hub.tables import Conversation, Event, Message, Participant

_P_COLUMNS = [c._meta.db_column_name for c in Participant._meta.columns]
_C_COLUMNS = [c._meta.db_column_name for c in Conversation._meta.columns]
_M_COLUMNS = [c._meta.db_column_name for c in Message._meta.columns]

_TOUCH = f"""
WITH p AS (
  UPDATE participants SET tm_last_active = $5
  WHERE customer_id = $1 AND account_id = $2 AND address_type = $3 AND target = $4
    AND tm_delete IS NULL AND conversation_status = '{participants.OPEN}'
  RETURNING {", ".join(_P_COLUMNS)}
)
SELECT {", ".join(f"p.{name} AS p_{name}" for name in _P_COLUMNS)},
       {", ".join(f"c.{name}" for name in _C_COLUMNS)}
FROM p JOIN conversations c ON c.id = p.conversation_id
FOR UPDATE OF c
"""

_STORE = f"""
WITH m AS (
  INSERT INTO messages ({", ".join(_M_COLUMNS)})
  VALUES ({", ".join(f"${i + 1}" for i in range(len(_M_COLUMNS)))})
  ON CONFLICT DO NOTHING
  RETURNING id
), last AS (
  UPDATE conversations SET tm_last_message = ${len(_M_COLUMNS) + 1}, last_message = ${len(_M_COLUMNS) + 2}
  WHERE id = ${len(_M_COLUMNS) + 3} AND EXISTS (SELECT 1 FROM m)
    AND (tm_last_message IS NULL OR tm_last_message <= ${len(_M_COLUMNS) + 1})
  RETURNING id
), e AS (
  INSERT INTO events (id, customer_id, conversation_id, owner_id, previous_owner_id, type, data)
  SELECT u.id, u.customer_id, u.conversation_id, u.owner_id, u.previous_owner_id, u.type, u.data
  FROM unnest(${len(_M_COLUMNS) + 4}::uuid[], ${len(_M_COLUMNS) + 5}::uuid[], ${len(_M_COLUMNS) + 6}::uuid[],
              ${len(_M_COLUMNS) + 7}::uuid[], ${len(_M_COLUMNS) + 8}::uuid[], ${len(_M_COLUMNS) + 9}::text[],
              ${len(_M_COLUMNS) + 10}::text[])
       WITH ORDINALITY AS u(id, customer_id, conversation_id, owner_id, previous_owner_id, type, data, n)
  WHERE EXISTS (SELECT 1 FROM m)
  ORDER BY u.n
  RETURNING seq
)
SELECT (SELECT count(*) FROM m) AS stored, (SELECT count(*) FROM last) AS latest,
       (SELECT count(*) FROM e) AS events
"""


def connection_of(txn: Any):
    """The asyncpg connection of a Piccolo PostgreSQL transaction (None on SQLite)."""
    from piccolo.engine.postgres import PostgresTransaction

    return txn.connection if isinstance(txn, PostgresTransaction) else None


async def touch(
    conn, customer_id: UUID, account_id: UUID, address_type: str, target: str, stamp: datetime
) -> participants.Room | None:
    """hub.participants._touch for an inbound message in one statement: the live participant,
    marked active, and its conversation, both locked; None if the address has no live one."""
    row = await conn.fetchrow(_TOUCH, customer_id, account_id, address_type, target, stamp)
    if row is None:
        return None
    participant = {name: row[f"p_{name}"] for name in _P_COLUMNS}
    conversation = {name: row[name] for name in _C_COLUMNS}
    return participants.Room(conversation, participant)


async def store(conn, message: dict[str, Any], last_message: str, events: list[Event]) -> tuple[bool, bool]:
    """Inserts the message (nothing if its provider id is stored already), records it as the
    conversation's last message unless a later one is, and inserts `events` in order when it
    was new. Returns (stored, became the last message)."""
    row = await conn.fetchrow(
        _STORE,
        *[message[name] for name in _M_COLUMNS],
        message["tm_create"],
        last_message,
        message["conversation_id"],
        [e.id for e in events],
        [e.customer_id for e in events],
        [e.conversation_id for e in events],
        [e.owner_id for e in events],
        [e.previous_owner_id for e in events],
        [e.type for e in events],
        [e.data for e in events],
    )
    return row["stored"] == 1, row["latest"] == 1


# --- an owned conversation (or an account without a flow): one statement, no transaction ------

# Where the ids only the database knows (the conversation and participant of the address) go
# into JSON built here: random per message, so no text can contain them by accident.
_M_TYPES = {c._meta.db_column_name: c.column_type for c in Message._meta.columns}
_FROM_ROOM = {"conversation_id": "c.id", "participant_id": "c.p_id"}
_M_GIVEN = [name for name in _M_COLUMNS if name not in _FROM_ROOM]
_N = len(_M_GIVEN)
_M_VALUES = [
    _FROM_ROOM[name] if name in _FROM_ROOM else f"${_M_GIVEN.index(name) + 1}::{_M_TYPES[name]}"
    for name in _M_COLUMNS
]

_STORE_ONE = f"""
WITH p AS (
  UPDATE participants SET tm_last_active = ${_N + 1}
  WHERE customer_id = ${_N + 2} AND account_id = ${_N + 3} AND address_type = ${_N + 4}
    AND target = ${_N + 5} AND tm_delete IS NULL AND conversation_status = '{participants.OPEN}'
  RETURNING id, conversation_id
), c AS (
  SELECT {", ".join(f"c.{name}" for name in _C_COLUMNS)}, p.id AS p_id
  FROM p JOIN conversations c ON c.id = p.conversation_id
  WHERE (c.owner_id <> '{NIL_UUID}' OR NOT ${_N + 6})
    AND NOT EXISTS (SELECT 1 FROM activeflows a WHERE a.conversation_id = c.id AND a.status = 'running')
  FOR UPDATE OF c
), m AS (
  INSERT INTO messages ({", ".join(_M_COLUMNS)})
  SELECT {", ".join(_M_VALUES)}
  FROM c
  ON CONFLICT DO NOTHING
  RETURNING id
), last AS (
  UPDATE conversations SET tm_last_message = ${_N + 7}, last_message = ${_N + 8}
  WHERE id = (SELECT id FROM c) AND EXISTS (SELECT 1 FROM m)
    AND (tm_last_message IS NULL OR tm_last_message <= ${_N + 7})
  RETURNING id
), e AS (
  INSERT INTO events (id, customer_id, conversation_id, owner_id, type, data)
  SELECT u.id, c.customer_id, c.id, c.owner_id, u.type,
         replace(replace(u.data, ${_N + 12}, c.id::text), ${_N + 13}, c.p_id::text)
  FROM c, unnest(${_N + 9}::uuid[], ${_N + 10}::text[], ${_N + 11}::text[])
       WITH ORDINALITY AS u(id, type, data, n)
  WHERE EXISTS (SELECT 1 FROM m)
  ORDER BY u.n
  RETURNING seq
)
SELECT (SELECT count(*) FROM p) AS found, (SELECT count(*) FROM m) AS stored,
       (SELECT count(*) FROM last) AS latest, (SELECT count(*) FROM e) AS events, c.*
FROM (SELECT 1) AS one LEFT JOIN c ON true
"""


class OutboxEvent(NamedTuple):
    """An outbox event of the one-statement path (its customer and owner come from the room)."""

    id: UUID
    type: str
    data: str


class Placeholders:
    """Stand-ins for the room's ids in JSON built before the statement knows them."""

    def __init__(self) -> None:
        self.conversation_id = uuid4()
        self.participant_id = uuid4()


async def store_in_owned_room(
    conn,
    message: dict[str, Any],
    last_message: str,
    events: list[OutboxEvent],
    ids: Placeholders,
    address_type: str,
    target: str,
    flow_possible: bool,
) -> tuple[str, dict[str, Any] | None, bool]:
    """For an address with a live participant whose conversation starts no flow for this message
    (an owner, or no flow on the account) and has no running activeflow: the whole inbound write
    (participant touched, conversation locked, message deduplicated, last_message, events) as
    one statement, atomic by itself. `message` holds the placeholders' ids for the room's.

    Returns ("stored" | "duplicate" | "elsewhere", conversation, became the last message);
    "elsewhere": no such room here, nothing was written but the participant's tm_last_active
    (the transaction path does the rest)."""
    row = await conn.fetchrow(
        _STORE_ONE,
        *[message[name] for name in _M_GIVEN],
        message["tm_create"],
        message["customer_id"],
        message["account_id"],
        address_type,
        target,
        flow_possible,
        message["tm_create"],
        last_message,
        [e.id for e in events],
        [e.type for e in events],
        [e.data for e in events],
        str(ids.conversation_id),
        str(ids.participant_id),
    )
    if row["id"] is None:
        return "elsewhere", None, False
    conversation = {name: row[name] for name in _C_COLUMNS}
    participant_id = row["p_id"]
    message["conversation_id"], message["participant_id"] = conversation["id"], participant_id
    if row["stored"] != 1:
        return "duplicate", conversation, False
    return "stored", conversation, row["latest"] == 1


# --- several messages of the kind above at once: one statement, one commit (group commit) ----

# The message columns the caller gives, as `m_<name>` in the statement's item rows.
_M_ARRAYS = [f"${i + 2}::{_M_TYPES[name]}[]" for i, name in enumerate(_M_GIVEN)]
_K = len(_M_GIVEN) + 2  # the first parameter after the message columns
_I_COLUMNS = ", ".join(
    ["n", *(f"m_{name}" for name in _M_GIVEN)]
    + ["stamp", "customer_id", "account_id", "address_type", "target", "flow_possible", "last_message"]
    + ["ph_c", "ph_p"]
)
_BATCH_M_VALUES = [
    {"conversation_id": "ci.c_id", "participant_id": "ci.p_id"}.get(name, f"ci.m_{name}")
    for name in _M_COLUMNS
]

_STORE_MANY = f"""
WITH i AS (
  SELECT * FROM unnest($1::int[], {", ".join(_M_ARRAYS)}, ${_K}::timestamptz[], ${_K + 1}::uuid[],
                       ${_K + 2}::uuid[], ${_K + 3}::text[], ${_K + 4}::text[], ${_K + 5}::bool[],
                       ${_K + 6}::text[], ${_K + 7}::text[], ${_K + 8}::text[])
    AS i({_I_COLUMNS})
), s AS (
  SELECT customer_id, account_id, address_type, target, max(stamp) AS stamp,
         bool_or(flow_possible) AS flow_possible
  FROM i GROUP BY customer_id, account_id, address_type, target
  -- Participants (then their conversations) locked in one order by every batch, as far as the
  -- plan follows it: two batches of two API processes rarely deadlock (a deadlocked batch is
  -- written again message by message).
  ORDER BY customer_id, account_id, address_type, target
), p AS (
  UPDATE participants pa SET tm_last_active = s.stamp
  FROM s
  WHERE pa.customer_id = s.customer_id AND pa.account_id = s.account_id
    AND pa.address_type = s.address_type AND pa.target = s.target
    AND pa.tm_delete IS NULL AND pa.conversation_status = '{participants.OPEN}'
  RETURNING pa.id, pa.conversation_id, pa.customer_id, pa.account_id, pa.address_type, pa.target,
            s.flow_possible
), c AS (
  SELECT {", ".join(f"c.{name} AS c_{name}" for name in _C_COLUMNS)}, p.id AS p_id,
         p.customer_id AS p_customer_id, p.account_id AS p_account_id,
         p.address_type AS p_address_type, p.target AS p_target
  FROM p JOIN conversations c ON c.id = p.conversation_id
  WHERE (c.owner_id <> '{NIL_UUID}' OR NOT p.flow_possible)
    AND NOT EXISTS (SELECT 1 FROM activeflows a WHERE a.conversation_id = c.id AND a.status = 'running')
  FOR UPDATE OF c
), ci AS (
  SELECT i.*, c.*
  FROM i JOIN c ON c.p_customer_id = i.customer_id AND c.p_account_id = i.account_id
                AND c.p_address_type = i.address_type AND c.p_target = i.target
), m AS (
  INSERT INTO messages ({", ".join(_M_COLUMNS)})
  SELECT {", ".join(_BATCH_M_VALUES)}
  FROM ci ORDER BY ci.n
  ON CONFLICT DO NOTHING
  RETURNING id
), l AS (
  SELECT DISTINCT ON (ci.c_id) ci.c_id, ci.n, ci.stamp, ci.last_message
  FROM ci JOIN m ON m.id = ci.m_id
  ORDER BY ci.c_id, ci.stamp DESC, ci.n DESC
), last AS (
  UPDATE conversations SET tm_last_message = l.stamp, last_message = l.last_message
  FROM l
  WHERE conversations.id = l.c_id
    AND (conversations.tm_last_message IS NULL OR conversations.tm_last_message <= l.stamp)
  RETURNING l.n
), e AS (
  INSERT INTO events (id, customer_id, conversation_id, owner_id, type, data)
  SELECT u.id, ci.c_customer_id, ci.c_id, ci.c_owner_id, u.type,
         replace(replace(u.data, ci.ph_c, ci.c_id::text), ci.ph_p, ci.p_id::text)
  FROM unnest(${_K + 9}::int[], ${_K + 10}::uuid[], ${_K + 11}::text[], ${_K + 12}::text[])
       WITH ORDINALITY AS u(n, id, type, data, k)
  JOIN ci ON ci.n = u.n
  WHERE EXISTS (SELECT 1 FROM m WHERE m.id = ci.m_id)
  ORDER BY u.k
  RETURNING seq
)
SELECT i.n, EXISTS (SELECT 1 FROM m WHERE m.id = i.m_id) AS stored,
       EXISTS (SELECT 1 FROM last WHERE last.n = i.n) AS latest, (SELECT count(*) FROM e) AS events,
       {", ".join(f"ci.c_{name}" for name in _C_COLUMNS)}, ci.p_id
FROM i LEFT JOIN ci ON ci.n = i.n
ORDER BY i.n
"""


class OwnedRoomWrite(NamedTuple):
    """One inbound message for store_in_owned_room, as its arguments."""

    message: dict[str, Any]
    last_message: str
    events: list[OutboxEvent]
    ids: Placeholders
    address_type: str
    target: str
    flow_possible: bool


async def store_many_in_owned_rooms(
    conn, writes: list[OwnedRoomWrite]
) -> list[tuple[str, dict[str, Any] | None, bool]]:
    """store_in_owned_room for several messages in one statement (so one commit), each with the
    same outcome it would have alone. Messages to one conversation are stored, and their events
    written, in list order; the conversation's last message is the latest of them. A message is
    "elsewhere" when another message of the batch from its address says its account may start a
    flow and the conversation has no owner (the general path then decides)."""
    event_n: list[int] = []
    event_ids: list[UUID] = []
    event_types: list[str] = []
    event_data: list[str] = []
    for n, write in enumerate(writes):
        for event in write.events:
            event_n.append(n)
            event_ids.append(event.id)
            event_types.append(event.type)
            event_data.append(event.data)
    rows = await conn.fetch(
        _STORE_MANY,
        list(range(len(writes))),
        *[[w.message[name] for w in writes] for name in _M_GIVEN],
        [w.message["tm_create"] for w in writes],
        [w.message["customer_id"] for w in writes],
        [w.message["account_id"] for w in writes],
        [w.address_type for w in writes],
        [w.target for w in writes],
        [w.flow_possible for w in writes],
        [w.last_message for w in writes],
        [str(w.ids.conversation_id) for w in writes],
        [str(w.ids.participant_id) for w in writes],
        event_n,
        event_ids,
        event_types,
        event_data,
    )
    outcomes: list[tuple[str, dict[str, Any] | None, bool]] = []
    for write, row in zip(writes, rows, strict=True):
        if row["c_id"] is None:
            outcomes.append(("elsewhere", None, False))
            continue
        conversation = {name: row[f"c_{name}"] for name in _C_COLUMNS}
        write.message["conversation_id"], write.message["participant_id"] = conversation["id"], row["p_id"]
        if not row["stored"]:
            outcomes.append(("duplicate", conversation, False))
        else:
            outcomes.append(("stored", conversation, row["latest"]))
    return outcomes
