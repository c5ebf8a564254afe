"""Channel accounts (SMS numbers, LINE channels) with their write-only provider credentials."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from hub.addresses import normalize_tel
from hub.errors import BadRequest
from hub.flows import check_flow_reference
from hub.pagination import fetch_page
from hub.repo import get_scoped, soft_delete, update_scoped
from hub.tables import Account

ACCOUNT_TYPES = ("sms", "line")
CONVERSATION_TYPE = {"sms": "message", "line": "line"}


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


async def create_account(customer_id: UUID, values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    if values.get("type") not in ACCOUNT_TYPES:
        raise BadRequest("type must be one of sms, line")
    values["number"] = _check_number(values["type"], values.get("number", ""))
    await check_flow_reference(customer_id, values.get("message_flow_id"))
    account = Account(id=uuid.uuid4(), customer_id=customer_id, **values)
    await Account.insert(account)
    return await get_scoped(Account, customer_id, account.id)


async def get_account(customer_id: UUID, account_id: UUID) -> dict[str, Any]:
    return await get_scoped(Account, customer_id, account_id)


async def get_account_for_hook(account_id: UUID) -> dict[str, Any] | None:
    """The account a provider webhook names, whatever its customer (the hook carries no JWT)."""
    return await Account.select().where(Account.id == account_id, Account.tm_delete.is_null()).first()


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
    return await update_scoped(Account, customer_id, account_id, values)


async def delete_account(customer_id: UUID, account_id: UUID) -> dict[str, Any]:
    return await soft_delete(Account, customer_id, account_id)
