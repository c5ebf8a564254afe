"""Test helpers: tenants with agents of every permission, signed Twilio-format inbound posts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
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
    """Polls an async predicate until it returns something truthy; fails the test on timeout."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
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


async def schema_columns(engine) -> dict[str, set[str]]:
    """The columns each hub table has in `engine`'s database now (tables it lacks are absent)."""
    from piccolo.engine.sqlite import SQLiteEngine

    from hub.tables import TABLES

    found: dict[str, set[str]] = {}
    for table in TABLES:
        name = table._meta.tablename
        if isinstance(engine, SQLiteEngine):
            rows = await engine.run_ddl(f'PRAGMA table_info("{name}")')
            columns = {r["name"] for r in rows}
        else:
            rows = await engine.run_ddl(
                f"SELECT column_name FROM information_schema.columns WHERE table_name = '{name}'"
            )
            columns = {r["column_name"] for r in rows}
        if columns:
            found[name] = columns
    return found


@contextlib.contextmanager
def tables_limited_to(columns: dict[str, set[str]]):
    """The hub's Table classes see only `columns` (an older schema, from `schema_columns`) while
    this lasts, so today's code writes and reads rows the way a database of then holds them:
    a migration test populates its database with the code, whatever later migrations added."""
    from hub.tables import TABLES

    saved = []
    for table in TABLES:
        meta = table._meta
        keep = columns.get(meta.tablename)
        if keep is None:
            continue
        saved.append((meta, meta.columns, meta.default_columns, meta.non_default_columns))
        meta.columns = [c for c in meta.columns if c._meta.db_column_name in keep]
        meta.default_columns = [c for c in meta.default_columns if c._meta.db_column_name in keep]
        meta.non_default_columns = [c for c in meta.non_default_columns if c._meta.db_column_name in keep]
    try:
        yield
    finally:
        for meta, all_columns, default_columns, non_default_columns in saved:
            meta.columns, meta.default_columns = all_columns, default_columns
            meta.non_default_columns = non_default_columns
