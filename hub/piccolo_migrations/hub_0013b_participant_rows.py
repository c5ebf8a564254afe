"""Every existing conversation gets its first participant from its room key (participant id =
conversation id), messages their participant and channel; the room-key index gives way to the
participants' unique index over live addresses of open conversations."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.engine.sqlite import SQLiteEngine

ID = "2026-12-01T10:13:30:000000"
VERSION = "1.38.0"
DESCRIPTION = "participant rows and indexes"

_ADDRESS_TYPE = "CASE c.type WHEN 'line' THEN 'line' WHEN 'email' THEN 'email' ELSE 'tel' END"
_TARGET_NAME = {
    "postgres": "COALESCE(c.peer_address::json ->> 'target_name', '')",
    "sqlite": "COALESCE(json_extract(c.peer_address, '$.target_name'), '')",
}


def _insert_participants(engine_kind: str) -> str:
    return f"""
INSERT INTO participants (id, customer_id, conversation_id, account_id, address_type, target,
    target_name, address, self_address, contact_id, conversation_status, tm_last_active,
    tm_create, tm_update, tm_delete)
SELECT c.id, c.customer_id, c.id, c.account_id, {_ADDRESS_TYPE}, c.peer_target,
    {_TARGET_NAME[engine_kind]}, c.peer_address, c.self_address,
    (SELECT ca.contact_id FROM contact_addresses ca JOIN contacts k ON k.id = ca.contact_id
     WHERE ca.customer_id = c.customer_id AND ca.type = {_ADDRESS_TYPE} AND ca.target = c.peer_target
       AND k.tm_delete IS NULL
     ORDER BY k.tm_create LIMIT 1),
    'open',
    (SELECT max(m.tm_create) FROM messages m WHERE m.conversation_id = c.id AND m.direction = 'incoming'),
    c.tm_create, c.tm_update, c.tm_delete
FROM conversations c
"""


STATEMENTS = [
    # The old key had the self target in it: live rooms with one peer at one account and two of
    # its numbers (an SMS account reached on another To number) now share an address. The newest
    # keeps it live; the others keep theirs as removed, so history stays and matching is unique.
    "UPDATE participants SET tm_delete = tm_update WHERE id IN ("
    " SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY customer_id, account_id, address_type,"
    " target ORDER BY tm_create DESC, id DESC) AS rn FROM participants WHERE tm_delete IS NULL) ranked"
    " WHERE rn > 1)",
    # Every message so far belongs to its conversation's only participant.
    "UPDATE messages SET participant_id = messages.conversation_id, channel = accounts.type "
    "FROM accounts WHERE accounts.id = messages.account_id",
    "DROP INDEX conversations_room_key",
    # Room matching: one live participant per address at an account among open conversations.
    "CREATE UNIQUE INDEX participants_live_address ON participants "
    "(customer_id, account_id, address_type, target) "
    "WHERE tm_delete IS NULL AND conversation_status = 'open'",
    # Contact routing: the live participants holding an address, whatever the account.
    "CREATE INDEX participants_address ON participants (customer_id, address_type, target) "
    "WHERE tm_delete IS NULL",
    "CREATE INDEX participants_conversation ON participants (conversation_id, tm_create)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        kind = "sqlite" if isinstance(engine, SQLiteEngine) else "postgres"
        await engine.run_ddl(_insert_participants(kind))
        for statement in STATEMENTS:
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
