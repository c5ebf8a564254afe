"""Test helpers: tenants with agents of every permission, signed Twilio-format inbound posts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import inspect
import itertools
import json
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from hub import accounts, agents, db
from hub.auth import issue_token
from hub.permissions import ADMIN, MANAGER
from hub.tables import Conversation

JWT_SECRET = "test-secret-for-the-hub-test-suite-0123456789"
PUBLIC_URL = "http://hub.test"


@dataclass
class Member:
    id: uuid.UUID
    token: str
    username: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Tenant:
    customer_id: uuid.UUID
    admin: Member
    manager: Member
    agent: Member
    other_agent: Member
    account: dict
    auth_token: str
    extra: dict = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(settings, restore_engine=None) -> AsyncIterator[str]:
    """The hub's API for `settings` on a free port (real uvicorn, this event loop); yields its URL.

    Its lifespan binds every table to its own engine; with `restore_engine` they are bound back
    before it stops (it closes its engine as it goes)."""
    from api.app import create_app
    from api.fakes import start_server

    port = free_port()
    server, task = await start_server(create_app(settings), "127.0.0.1", port, lifespan="on")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if restore_engine is not None:
            db.use_engine(restore_engine)
        server.should_exit = True
        await task


class FlakyProxy:
    """A TCP proxy (in front of PostgreSQL, Temporal, Redis) that can drop every connection and
    refuse new ones (`outage`), or accept connections and never answer (`hang`)."""

    def __init__(self, upstream_port: int = 5432) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.down = False
        self.hung = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        if self.hung:
            self.writers.add(writer)
            return  # the connection stays open; nothing is ever read or answered
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def outage(self) -> None:
        self.down = True
        self._drop()

    def hang(self) -> None:
        """Open connections go quiet and new ones are accepted but never answered."""
        self.hung = True
        self._drop()

    def restore(self) -> None:
        """New connections go through again; the hung ones are reset, as a peer would at last."""
        if self.hung:
            self._drop()
        self.down = self.hung = False

    def _drop(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.outage()
        self.server.close()


async def make_member(customer_id: uuid.UUID, permission: int, label: str) -> Member:
    username = f"{label}-{uuid.uuid4().hex[:10]}"
    row = await agents.create_agent(customer_id, username, "password-123", name=label, permission=permission)
    return Member(row["id"], issue_token(row["id"], customer_id, JWT_SECRET, 3600), username)


async def make_tenant(number: str = "+15550001000") -> Tenant:
    customer = await agents.create_customer(f"customer-{uuid.uuid4().hex[:6]}")
    cid = customer["id"]
    auth_token = secrets.token_hex(16)
    account = await accounts.create_account(
        cid,
        {"type": "sms", "name": "Main line", "number": number, "sid": "AC" + "0" * 32, "token": auth_token},
    )
    return Tenant(
        customer_id=cid,
        admin=await make_member(cid, ADMIN, "admin"),
        manager=await make_member(cid, MANAGER, "manager"),
        agent=await make_member(cid, 0, "agent"),
        other_agent=await make_member(cid, 0, "other"),
        account=account,
        auth_token=auth_token,
    )


def sms_params(
    sender: str = "+14155551234",
    to: str = "+15550001000",
    body: str = "hello",
    sid: str | None = None,
    media: list[tuple[str, str]] | None = None,
) -> dict[str, str]:
    params = {
        "MessageSid": sid or "SM" + uuid.uuid4().hex,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": str(len(media or [])),
    }
    for i, (content_type, url) in enumerate(media or []):
        params[f"MediaContentType{i}"] = content_type
        params[f"MediaUrl{i}"] = url
    return params


def signed_sms(
    account_id, auth_token: str, params: dict[str, str], public_url: str = PUBLIC_URL
) -> tuple[str, bytes, dict[str, str]]:
    """Path, form body and headers exactly as a Twilio-compatible provider would post them."""
    path = f"/v1.0/hooks/accounts/{account_id}"
    signature = RequestValidator(auth_token).compute_signature(public_url + path, params)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    return path, urlencode(params).encode(), headers


async def make_line_account(customer_id: uuid.UUID) -> tuple[dict, str]:
    """A LINE account of `customer_id` and its channel secret."""
    secret = secrets.token_hex(16)
    account = await accounts.create_account(
        customer_id,
        {"type": "line", "name": "LINE channel", "secret": secret, "token": secrets.token_hex(24)},
    )
    return account, secret


def line_event(kind: str, user_id: str, text: str = "", event_id: str | None = None, **extra) -> dict:
    event = {
        "type": kind,
        "webhookEventId": event_id or uuid.uuid4().hex.upper()[:26],
        "timestamp": 1764000000000,
        "mode": "active",
        "source": {"type": "user", "userId": user_id},
        "deliveryContext": {"isRedelivery": False},
        **extra,
    }
    if kind == "message" and "message" not in extra:
        event["message"] = {"id": str(uuid.uuid4().int)[:18], "type": "text", "text": text}
    return event


def signed_line(account_id, channel_secret: str, events: list[dict]) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps({"destination": "Ubot" + "0" * 29, "events": events}).encode()
    signature = base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()
    headers = {"Content-Type": "application/json", "X-Line-Signature": signature}
    return f"/v1.0/hooks/accounts/{account_id}", body, headers


async def wait_for(predicate, within: float = 20.0, interval: float = 0.1):
    """Polls a predicate (async or plain) until it returns something truthy; fails the test on
    timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within} s (last value {value!r})")
        await asyncio.sleep(interval)


_senders = itertools.count(1)


async def open_conversation(client, tenant: Tenant, sender: str | None = None) -> uuid.UUID:
    """A conversation made the way production makes them: a signed inbound SMS (from a new
    peer unless `sender` is given). Returns its id."""
    sender = sender or f"+1628{next(_senders):07d}"
    params = sms_params(sender=sender, to=tenant.account["number"])
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    row = (
        await Conversation.select(Conversation.id)
        .where(
            Conversation.customer_id == tenant.customer_id,
            Conversation.peer_target == sender,
            Conversation.tm_delete.is_null(),
        )
        .first()
    )
    return row["id"]


@contextlib.asynccontextmanager
async def fresh_pg_database(admin_dsn: str) -> AsyncIterator[str]:
    """An empty PostgreSQL database of its own (dropped afterwards); yields its URL."""
    import asyncpg

    name = f"hub_extra_{uuid.uuid4().hex[:10]}"
    base = admin_dsn.rpartition("/")[0]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def migration_before(migration_id: str) -> str:
    """The id of the hub migration that runs just before `migration_id`."""
    import importlib
    import pkgutil

    import hub.piccolo_migrations as package

    ids = [
        importlib.import_module(f"{package.__name__}.{m.name}").ID
        for m in pkgutil.iter_modules(package.__path__)
    ]
    return max(i for i in ids if i < migration_id)


@contextlib.asynccontextmanager
async def database_before(url: str, migration_id: str):
    """The hub's tables bound to the database at `url`, migrated up to just before `migration_id`
    (for a migration scenario run by run_migration_scenario); yields the engine."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    from hub import db

    engine = await db.open_engine(url)
    db.use_engine(engine)
    await db.start(engine, pool_size=2)
    try:
        result = await run_forwards(app_name="hub", migration_id=migration_before(migration_id))
        assert result.success, result.message
        yield engine
    finally:
        await db.stop(engine)


def run_migration_scenario(module: str, engine: str, tmp_path, admin_dsn: str, done_marker: str) -> None:
    """Runs `python -m <module> <database url>` on a fresh PostgreSQL database or SQLite file and
    checks it printed `done_marker`. A subprocess: binding the tables to a half-migrated database in
    the test process would hand it to the session's webhook relay running in the background."""
    import asyncio
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    async def run_on(url: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", module, url],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=300,
        )

    async def main() -> subprocess.CompletedProcess:
        if engine == "sqlite":
            return await run_on(f"sqlite:///{tmp_path / 'hub.sqlite'}")
        async with fresh_pg_database(admin_dsn) as url:
            return await run_on(url)

    done = asyncio.run(main())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done_marker in done.stdout, done.stdout + done.stderr


async def table_columns(engine) -> dict[str, list[tuple[str, str, bool]]]:
    """Every hub table of the database as it is now (whatever migration it is at):
    {table: [(column, declared type, generated by the database)]}."""
    from piccolo.engine.sqlite import SQLiteEngine

    tables: dict[str, list[tuple[str, str, bool]]] = {}
    if isinstance(engine, SQLiteEngine):
        names = await engine.run_ddl(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "AND name != 'migration'"
        )
        for row in names:
            info = await engine.run_ddl(f'PRAGMA table_info("{row["name"]}")')
            # An INTEGER PRIMARY KEY is SQLite's rowid: the database numbers it.
            tables[row["name"]] = [
                (c["name"], c["type"].upper(), bool(c["pk"]) and c["type"].upper() == "INTEGER") for c in info
            ]
        return tables
    rows = await engine.run_ddl(
        "SELECT table_name, column_name, data_type, column_default FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name != 'migration' ORDER BY table_name, ordinal_position"
    )
    for row in rows:
        generated = (row["column_default"] or "").startswith("nextval(")
        tables.setdefault(row["table_name"], []).append(
            (row["column_name"], row["data_type"].upper(), generated)
        )
    return tables


# Text columns the hub keeps JSON in (migrations may read into them).
_JSON_OBJECT_COLUMNS = {
    "source",
    "destination",
    "self_address",
    "peer_address",
    "address",
    "variables",
    "data",
}
_JSON_LIST_COLUMNS = {"medias", "actions", "executed_actions", "tags", "provider_message_ids"}


def _sample_value(declared: str, n: int, column: str = ""):
    from datetime import UTC, datetime, timedelta

    if column in _JSON_OBJECT_COLUMNS:
        return json.dumps({"type": "tel", "target": f"+1415555{n:04d}", "target_name": f"name {n}"})
    if column in _JSON_LIST_COLUMNS:
        return "[]"

    if "UUID" in declared:
        return str(uuid.UUID(int=n + 1))
    if "TIMESTAMP" in declared:
        return datetime(2026, 11, 30, 12, 0, tzinfo=UTC) + timedelta(seconds=n)
    if "BOOL" in declared:
        # False: a `fresh` webhook delivery would be picked up by the session's delivery shards.
        return False
    if "INT" in declared or "SERIAL" in declared:
        return n + 1
    if "JSON" in declared:
        return "{}"
    return f"v{n}"


async def populate_every_table(engine, rows_per_table: int = 2) -> None:
    """Rows with a distinct value in every column of every table (unique indexes stay happy), for
    migration tests: whatever a later migration adds, the rows were written by the schema of then."""
    from piccolo.engine.sqlite import SQLiteEngine

    sqlite = isinstance(engine, SQLiteEngine)
    for table, columns in (await table_columns(engine)).items():
        filled = [(name, declared) for name, declared, generated in columns if not generated]
        for r in range(rows_per_table):
            values = [
                _sample_value(declared, 1000 * r + i, name) for i, (name, declared) in enumerate(filled)
            ]
            names = ", ".join(f'"{name}"' for name, _ in filled)
            if sqlite:
                placeholders = ", ".join("?" for _ in filled)
                values = [v.isoformat() if hasattr(v, "isoformat") else v for v in values]
            else:
                placeholders = ", ".join(f"${i + 1}" for i in range(len(filled)))
            await _execute(engine, f'INSERT INTO "{table}" ({names}) VALUES ({placeholders})', values)


async def _execute(engine, sql: str, values: list) -> None:
    from piccolo.engine.sqlite import SQLiteEngine

    if isinstance(engine, SQLiteEngine):
        import aiosqlite

        async with aiosqlite.connect(engine.connection_kwargs["database"]) as conn:
            await conn.execute(sql, values)
            await conn.commit()
        return
    import asyncpg

    conn = await asyncpg.connect(engine.config["dsn"])
    try:
        # Text parameters for UUID columns: asyncpg wants str for uuid only via an explicit cast.
        await conn.execute(sql, *values)
    finally:
        await conn.close()


async def raw_snapshot(engine, columns: dict[str, list[tuple[str, str, bool]]]) -> dict[str, list[str]]:
    """The rows of every table in `columns`, only those columns, in a stable order (repr'd)."""
    snapshot = {}
    for table, table_columns_ in columns.items():
        names = ", ".join(f'"{name}"' for name, _, _ in table_columns_)
        rows = await engine.run_ddl(f'SELECT {names} FROM "{table}"')
        snapshot[table] = sorted(repr(sorted(dict(row).items())) for row in rows)
    return snapshot
