"""Conversation lifecycle and inbox fields: status (open/closed), tm_closed, closed_reason, the link
to the previous conversation, tm_last_message / last_message filled from existing messages, and the
customers' `inactivity_close_s` (0: existing customers close nothing by inactivity)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder
from piccolo.engine.sqlite import SQLiteEngine

ID = "2026-12-01T10:15:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "conversation lifecycle and inbox fields"

COLUMNS = [
    "ALTER TABLE conversations ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'open'",
    "ALTER TABLE conversations ADD COLUMN tm_closed TIMESTAMPTZ",
    "ALTER TABLE conversations ADD COLUMN closed_reason VARCHAR(16) NOT NULL DEFAULT ''",
    "ALTER TABLE conversations ADD COLUMN closed_note VARCHAR(200) NOT NULL DEFAULT ''",
    "ALTER TABLE conversations ADD COLUMN previous_conversation_id UUID",
    "ALTER TABLE conversations ADD COLUMN tm_last_message TIMESTAMPTZ",
    "ALTER TABLE conversations ADD COLUMN last_message TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE customers ADD COLUMN inactivity_close_s INTEGER NOT NULL DEFAULT 0",
]

# Each conversation's latest live message (ties broken by id, as lists order them).
_LATEST = """
    SELECT m.id FROM messages m
    WHERE m.conversation_id = conversations.id AND m.tm_delete IS NULL
    ORDER BY m.tm_create DESC, m.id DESC LIMIT 1
"""

BACKFILL_POSTGRES = f"""
UPDATE conversations c SET tm_last_message = m.tm_create,
    last_message = json_build_object('id', m.id, 'direction', m.direction, 'text', left(m.text, 200),
                                     'tm_create', m.tm_create)::text
FROM messages m
WHERE m.id = (SELECT id FROM ({_LATEST.replace("conversations.id", "c.id")}) latest)
"""

BACKFILL_SQLITE = f"""
UPDATE conversations SET (tm_last_message, last_message) = (
    SELECT m.tm_create, json_object('id', m.id, 'direction', m.direction, 'text', substr(m.text, 1, 200),
                                    'tm_create', m.tm_create)
    FROM messages m WHERE m.id = ({_LATEST})
)
WHERE EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = conversations.id AND m.tm_delete IS NULL)
"""

INDEXES = [
    # Inactivity sweep and `status` filters: open conversations by their last message.
    "CREATE INDEX conversations_open_last_message ON conversations (customer_id, tm_last_message) "
    "WHERE status = 'open' AND tm_delete IS NULL",
    # The list filters, each in the listing's keyset order.
    "CREATE INDEX conversations_status_page ON conversations (customer_id, status, tm_create, id)",
    "CREATE INDEX conversations_account_page ON conversations (customer_id, account_id, tm_create, id)",
    "CREATE INDEX conversations_type_page ON conversations (customer_id, type, tm_create, id)",
    # The inbox's order: newest activity first (hub/inbox.py).
    "CREATE INDEX conversations_activity_page ON conversations "
    "(customer_id, (COALESCE(tm_last_message, tm_create)), id) WHERE tm_delete IS NULL",
]
# The tag filter on PostgreSQL (SQLite reads the conversation_tags table of 0014).
POSTGRES_INDEXES = [
    "CREATE INDEX conversations_tags ON conversations USING gin ((tags::jsonb) jsonb_path_ops)",
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def run() -> None:
        engine = engine_finder()
        for statement in COLUMNS:
            await engine.run_ddl(statement)
        await engine.run_ddl(BACKFILL_SQLITE if isinstance(engine, SQLiteEngine) else BACKFILL_POSTGRES)
        sqlite = isinstance(engine, SQLiteEngine)
        for statement in INDEXES + ([] if sqlite else POSTGRES_INDEXES):
            await engine.run_ddl(statement)

    manager.add_raw(run)
    return manager
