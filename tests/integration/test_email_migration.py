"""Migrations 0012 (email account columns, email_messages) and 0012b (media) on a populated
database, PostgreSQL and SQLite: every row keeps its data, the new columns and tables work."""

from __future__ import annotations

import contextlib
import io
import uuid

import pytest
from piccolo.apps.migrations.commands.forwards import run_forwards

from hub import db
from hub.inbound import store_inbound
from hub.tables import Account, EmailMessage, StoredMedia
from tests.helpers import make_tenant, populate_every_table, raw_snapshot, table_columns
from tests.integration.test_reference_columns import fresh_engine
from tests.integration.test_repository_engines import inbound

BEFORE_0012 = "2026-12-01T10:11:00:000000"


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
async def test_0012_keeps_data_and_adds_email(kind, pg_engine):
    async with fresh_engine(kind) as engine:
        try:
            db.use_engine(engine)
            with contextlib.redirect_stdout(io.StringIO()):
                result = await run_forwards(app_name="hub", migration_id=BEFORE_0012)
            assert result.success, result.message
            await db.start(engine)
            # Rows in every column of every table, written by the schema of then (raw SQL).
            then = await table_columns(engine)
            assert "media" not in then and "address" not in [c[0] for c in then["accounts"]]
            await populate_every_table(engine)
            before = await raw_snapshot(engine, then)
            await db.migrate(engine)
            assert await raw_snapshot(engine, then) == before
            account = await Account.select().first()
            assert (account["address"], account["smtp_host"], account["smtp_port"]) == ("", "", 0)
            tenant = await make_tenant()
            first = await store_inbound(inbound(tenant.account, text="kept", provider_message_id="SMkept"))
            message = first.message
            await EmailMessage.insert(
                EmailMessage(
                    message_id=message["id"],
                    customer_id=message["customer_id"],
                    conversation_id=message["conversation_id"],
                    direction="incoming",
                    subject="kept",
                    header_message_id="<a@b.c>",
                )
            )
            media_id = uuid.uuid4()
            await StoredMedia.insert(
                StoredMedia(
                    id=media_id,
                    customer_id=message["customer_id"],
                    conversation_id=message["conversation_id"],
                    message_id=message["id"],
                    content_type="image/png",
                    size=3,
                    data=b"\x00\x01\x02",
                )
            )
            row = await StoredMedia.select().where(StoredMedia.id == media_id).first()
            assert row["data"] == b"\x00\x01\x02" and row["content_type"] == "image/png"
            assert (await EmailMessage.select().first())["header_message_id"] == "<a@b.c>"
        finally:
            db.use_engine(pg_engine)
