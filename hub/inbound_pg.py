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
from typing import Any
from uuid import UUID

from hub import participants
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
