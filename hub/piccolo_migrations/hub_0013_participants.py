"""Participants (section 8 of the contract): the participants table, the channel and participant of
each message, the customer's conversation routing. Rows and indexes: 0013b."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import UUID, Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.engine import engine_finder

ID = "2026-12-01T10:13:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "participants"

# Written out (not Piccolo's add_table) so the reference columns are NOT NULL without a default on
# both engines (see 0011). The declared types are the ones Piccolo's SQLite converters read.
CREATE_PARTICIPANTS = """
CREATE TABLE "participants" (
    "id" UUID PRIMARY KEY NOT NULL,
    "customer_id" UUID NOT NULL,
    "conversation_id" UUID NOT NULL,
    "account_id" UUID NOT NULL,
    "address_type" VARCHAR(16) NOT NULL,
    "target" VARCHAR(255) NOT NULL,
    "target_name" VARCHAR(255) NOT NULL DEFAULT '',
    "address" TEXT NOT NULL DEFAULT '{}',
    "self_address" TEXT NOT NULL DEFAULT '{}',
    "contact_id" UUID NULL,
    "conversation_status" VARCHAR(16) NOT NULL DEFAULT 'open',
    "tm_last_active" TIMESTAMPTZ NULL,
    "tm_create" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "tm_update" TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "tm_delete" TIMESTAMPTZ NULL
)
"""


def _params(**given):
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **given,
    }


COLUMNS = [
    ("Message", "messages", "participant_id", UUID, _params(default=None, null=True)),
    ("Message", "messages", "channel", Varchar, _params(length=16, default="")),
    ("Customer", "customers", "conversation_routing", Varchar, _params(length=16, default="contact")),
]


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)

    async def create_participants() -> None:
        await engine_finder().run_ddl(CREATE_PARTICIPANTS)

    manager.add_raw(create_participants)
    for class_name, tablename, column_name, column_class, params in COLUMNS:
        manager.add_column(
            table_class_name=class_name,
            tablename=tablename,
            column_name=column_name,
            db_column_name=column_name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )
    return manager
