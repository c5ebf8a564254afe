"""Channel accounts (SMS numbers, LINE channels, email mailboxes) with their write-only provider
credentials."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any
from uuid import UUID

from hub.addresses import normalize_tel
from hub.errors import BadRequest
from hub.flows import check_flow_reference
from hub.pagination import fetch_page
from hub.repo import get_scoped, soft_delete, update_scoped
from hub.tables import Account

ACCOUNT_TYPES = ("sms", "line", "email")
CONVERSATION_TYPE = {"sms": "message", "line": "line", "email": "email"}
EMAIL_FIELDS = ("address", "smtp_host", "smtp_port", "smtp_security", "smtp_username", "smtp_password")
SMTP_SECURITY = ("starttls", "tls", "none")
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
# change through this module drops the entry at once; other processes (several `hub serve`
# workers, a script) see it within HOOK_CACHE_S.
HOOK_CACHE_S = 2.0
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
        return await update_scoped(Account, customer_id, account_id, values)
    finally:
        forget_cached(account_id)  # a hook that read the account meanwhile cached the old row


async def delete_account(customer_id: UUID, account_id: UUID) -> dict[str, Any]:
    try:
        return await soft_delete(Account, customer_id, account_id)
    finally:
        forget_cached(account_id)
