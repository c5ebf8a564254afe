"""Channel accounts (SMS numbers, LINE channels, email mailboxes) with their write-only provider
credentials."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any
from uuid import UUID

from piccolo.engine.postgres import PostgresEngine

from hub.addresses import normalize_tel
from hub.db import pg_fetch
from hub.errors import BadRequest
from hub.flows import check_flow_reference
from hub.pagination import fetch_page
from hub.repo import get_scoped, soft_delete, update_scoped
from hub.tables import Account

ACCOUNT_TYPES = ("sms", "line", "email")
CONVERSATION_TYPE = {"sms": "message", "line": "line", "email": "email"}
EMAIL_FIELDS = ("address", "smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password")
SMTP_SECURITY = ("starttls", "tls", "none")
log = logging.getLogger(__name__)
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$|^\[[0-9A-Fa-f:.]+\]$")


def _check_number(account_type: str, number: str) -> str:
    if account_type != "sms":
        # A LINE channel has no phone number; anything here would be shown as one.
        if number.strip():
            raise BadRequest(f"number is for sms accounts; a {account_type} account has none")
        return ""
    normalized = normalize_tel(number)
    if not normalized:
        raise BadRequest("number must be an E.164 phone number for an sms account")
    return normalized


def _check_email(account_type: str, values: dict[str, Any]) -> dict[str, Any]:
    """The email fields of an account, validated and normalised (`values`: all of them)."""
    if account_type != "email":
        given = [k for k in EMAIL_FIELDS if values.get(k)]
        if given:
            raise BadRequest(f"{', '.join(given)}: for email accounts; a {account_type} account has none")
        return {}
    from hub.channels.email import default_port, normalize_address

    raw_address = str(values.get("address") or "")
    address = normalize_address(raw_address)
    if not address or "<" in raw_address:
        raise BadRequest("address must be an email address (the mailbox this account sends from)")
    security = values.get("smtp_security") or "starttls"
    if security not in SMTP_SECURITY:
        raise BadRequest("smtp_security must be one of starttls, tls, none")
    host = str(values.get("smtp_host") or "").strip()
    if not host or not _HOST.match(host):
        raise BadRequest("smtp_host must be the host name or address of the SMTP relay")
    port = values.get("smtp_port") or default_port(security)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadRequest("smtp_port must be between 1 and 65535")
    return {"address": address, "smtp_host": host, "smtp_port": port, "smtp_security": security}


async def create_account(customer_id: UUID, values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    if values.get("type") not in ACCOUNT_TYPES:
        raise BadRequest("type must be one of sms, line, email")
    values["number"] = _check_number(values["type"], values.get("number", ""))
    values.update(_check_email(values["type"], values))
    await check_flow_reference(customer_id, values.get("message_flow_id"))
    account = Account(id=uuid.uuid4(), customer_id=customer_id, **values)
    await Account.insert(account)
    return await get_scoped(Account, customer_id, account.id)


async def get_account(customer_id: UUID, account_id: UUID) -> dict[str, Any]:
    return await get_scoped(Account, customer_id, account_id)


# The accounts provider hooks named lately, with their credentials: every inbound message needs
# its account before anything else, and reading it each time was a tenth of the hook's work. A
# change through this module drops the entry at once. On PostgreSQL the change is also announced
# (NOTIFY on ACCOUNT_CHANGES) and every API process listening (AccountChanges) drops its entry when
# the notice arrives, a few milliseconds after the commit; a process whose listening connection is
# down sees the change within HOOK_CACHE_S, the entries' lifetime, as before.
HOOK_CACHE_S = 2.0
ACCOUNT_CHANGES = "hub_account_changed"
_hook_cache: dict[UUID, tuple[float, dict[str, Any]]] = {}
# The read under way per account: when an entry expires under load, every request then waiting
# for it shares one query instead of each running its own.
_hook_reads: dict[UUID, asyncio.Task] = {}
# Bumped by forget_cached: a read that began before a change does not put its row in the cache.
_hook_generation = 0


def forget_cached(account_id: UUID | None = None) -> None:
    """Drops the cached hook account (all of them without an id), and any read of it under way."""
    global _hook_generation
    _hook_generation += 1
    if account_id is None:
        _hook_cache.clear()
        _hook_reads.clear()
    else:
        _hook_cache.pop(account_id, None)
        _hook_reads.pop(account_id, None)


async def _read_hook_account(account_id: UUID, generation: int) -> dict[str, Any] | None:
    """The account from the database, cached unless forget_cached ran since `generation`."""
    clock = time.monotonic()
    row = await Account.select().where(Account.id == account_id, Account.tm_delete.is_null()).first()
    if generation != _hook_generation:
        return row  # changed meanwhile: the next request reads it again
    if row is None:
        _hook_cache.pop(account_id, None)
        return None
    if len(_hook_cache) > 10_000:
        _hook_cache.clear()
    _hook_cache[account_id] = (clock, row)
    return row


def _read_done(account_id: UUID, task: asyncio.Task) -> None:
    if _hook_reads.get(account_id) is task:
        del _hook_reads[account_id]
    if not task.cancelled():
        task.exception()  # retrieved: each waiter has it raised already (none may be left)


async def get_account_for_hook(account_id: UUID) -> dict[str, Any] | None:
    """The account a provider webhook names, whatever its customer (the hook carries no JWT)."""
    cached = _hook_cache.get(account_id)
    if cached is not None and time.monotonic() - cached[0] < HOOK_CACHE_S:
        return dict(cached[1])
    transaction = getattr(Account._meta.db, "current_transaction", None)
    if transaction is not None and transaction.get() is not None:
        # Inside a transaction, the read is the caller's own (it may see its uncommitted writes).
        row = await _read_hook_account(account_id, _hook_generation - 1)
        return None if row is None else dict(row)
    reading = _hook_reads.get(account_id)
    if reading is None or reading.get_loop() is not asyncio.get_running_loop():
        reading = asyncio.ensure_future(_read_hook_account(account_id, _hook_generation))
        _hook_reads[account_id] = reading
        reading.add_done_callback(lambda task: _read_done(account_id, task))
    # Shielded: a waiter that goes away (its client disconnected) does not cancel the others' read.
    row = await asyncio.shield(reading)
    return None if row is None else dict(row)


async def list_accounts(customer_id: UUID, page_size: int, page_token: str):
    return await fetch_page(
        Account, [Account.customer_id == customer_id, Account.tm_delete.is_null()], page_size, page_token
    )


async def update_account(customer_id: UUID, account_id: UUID, values: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in values.items() if k != "type"}
    if "message_flow_id" in values:
        await check_flow_reference(customer_id, values["message_flow_id"])
    if "number" in values:
        current = await get_scoped(Account, customer_id, account_id)
        values["number"] = _check_number(current["type"], values["number"])
    if any(k in values for k in EMAIL_FIELDS):
        current = await get_scoped(Account, customer_id, account_id)
        merged = {
            **{k: current[k] for k in EMAIL_FIELDS},
            **{k: v for k, v in values.items() if k in EMAIL_FIELDS},
        }
        values.update(_check_email(current["type"], merged))
    forget_cached(account_id)
    try:
        updated = await update_scoped(Account, customer_id, account_id, values)
    finally:
        forget_cached(account_id)  # a hook that read the account meanwhile cached the old row
    await _announce(account_id)
    return updated


async def delete_account(customer_id: UUID, account_id: UUID) -> dict[str, Any]:
    try:
        deleted = await soft_delete(Account, customer_id, account_id)
    finally:
        forget_cached(account_id)
    await _announce(account_id)
    return deleted


async def _announce(account_id: UUID) -> None:
    """Tells the other processes' caches (AccountChanges) that the account changed: on PostgreSQL a
    NOTIFY, delivered when the change's transaction commits (at once outside one). Best effort: a
    process that misses it (or a change whose write failed part-way, not announced) still drops
    the entry within HOOK_CACHE_S."""
    engine = Account._meta.db
    if not isinstance(engine, PostgresEngine):
        return  # SQLite: one process serves the API (HUB_HTTP_WORKERS applies to PostgreSQL)
    try:
        await pg_fetch(engine, "SELECT pg_notify($1, $2)", [ACCOUNT_CHANGES, str(account_id)])
    except Exception as exc:  # noqa: BLE001 - the change is made: its caller gets its answer
        log.warning("account change not announced: %s (others see it within %s s)", exc, HOOK_CACHE_S)


class AccountChanges:
    """LISTEN for other processes' account changes (PostgreSQL): each notice drops that account's
    cache entry. Runs on its own connection (the pool's connections never LISTEN); when it is lost
    the whole cache is dropped (notices may have been missed) and it reconnects, backing off from
    0.5 s to 10 s. Meanwhile the entries' lifetime (HOOK_CACHE_S) bounds how stale one can be."""

    def __init__(self, engine: PostgresEngine) -> None:
        self._engine = engine
        self._task: asyncio.Task | None = None
        self.listening = asyncio.Event()
        self.connection = None  # the listening connection, while there is one

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="account-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    @staticmethod
    def _notice(_connection, _pid, _channel, payload: str) -> None:
        try:
            forget_cached(UUID(payload))
        except ValueError:
            forget_cached()

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
                backoff = 0.5
                log.warning("account change notices lost; listening again in %s s", backoff)
            except Exception as exc:  # noqa: BLE001 - whatever broke the connection, listen again
                log.warning("cannot listen for account changes: %s; retrying in %s s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(10.0, backoff * 2)

    async def _listen(self) -> None:
        """Listens until the connection is lost."""
        lost = asyncio.Event()
        connection = self.connection = await self._engine.get_new_connection()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(ACCOUNT_CHANGES, self._notice)
            forget_cached()  # what was cached before listening may have changed unheard
            self.listening.set()
            await lost.wait()
        finally:
            self.listening.clear()
            self.connection = None
            forget_cached()
            if not connection.is_closed():
                connection.terminate()
