"""Email channel: accounts gain their mailbox and SMTP relay; `email_messages` keeps the email
headers of messages (subject, Message-Id, In-Reply-To, References) for threading replies.
Existing rows keep their data; the new account columns start empty (sms and line accounts)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Integer, Text, Varchar
from piccolo.columns.indexes import IndexMethod
from piccolo.engine import engine_finder
from piccolo.engine.sqlite import SQLiteEngine

ID = "2026-12-01T10:12:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "email accounts and email message headers"


def _params(**overrides):
    return {
        "null": False,
        "primary_key": False,
        "unique": False,
        "index": False,
        "index_method": IndexMethod.btree,
        "choices": None,
        "db_column_name": None,
        "secret": False,
        **overrides,
    }


ACCOUNT_COLUMNS = [
    ("address", Varchar, _params(length=255, default="")),
    ("smtp_host", Varchar, _params(length=255, default="")),
    ("smtp_port", Integer, _params(default=0)),
    ("smtp_security", Varchar, _params(length=16, default="")),
    ("smtp_username", Varchar, _params(length=255, default="")),
    ("smtp_password", Text, _params(default="")),
]

EMAIL_MESSAGES = """CREATE TABLE "email_messages" (
    "message_id" UUID PRIMARY KEY NOT NULL,
    "customer_id" UUID NOT NULL,
    "conversation_id" UUID NOT NULL,
    "direction" VARCHAR(16) NOT NULL DEFAULT '',
    "peer" VARCHAR(255) NOT NULL DEFAULT '',
    "subject" TEXT NOT NULL DEFAULT '',
    "header_message_id" TEXT NOT NULL DEFAULT '',
    "in_reply_to" TEXT NOT NULL DEFAULT '',
    "references" TEXT NOT NULL DEFAULT '',
    "tm_create" TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
)"""
INDEX = 'CREATE INDEX "email_messages_conversation_id" ON "email_messages" ("conversation_id", "tm_create")'


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="hub", description=DESCRIPTION)
    for name, column_class, params in ACCOUNT_COLUMNS:
        manager.add_column(
            table_class_name="Account",
            tablename="accounts",
            column_name=name,
            db_column_name=name,
            column_class_name=column_class.__name__,
            column_class=column_class,
            params=params,
            schema=None,
        )

    async def tables() -> None:
        engine = engine_finder()
        ddl = EMAIL_MESSAGES
        if not isinstance(engine, SQLiteEngine):
            ddl = ddl.replace(" NOT NULL DEFAULT current_timestamp", " NOT NULL DEFAULT CURRENT_TIMESTAMP")
        await engine.run_ddl(ddl)
        await engine.run_ddl(INDEX)

    manager.add_raw(tables)
    return manager
