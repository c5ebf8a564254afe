"""Contacts of a customer and their addresses; they name the peer in automatic titles."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from piccolo.engine.postgres import PostgresEngine

from hub.addresses import normalize_target
from hub.db import current_engine, transaction
from hub.errors import BadRequest, Conflict
from hub.models import ContactAddressOut, ContactOut
from hub.pagination import fetch_page
from hub.repo import get_scoped, soft_delete, update_scoped
from hub.tables import Contact, ContactAddress, Customer

CONTACT_ADDRESS_TYPES = ("tel", "line", "email")


def normalize_addresses(addresses: list[dict[str, str]]) -> list[dict[str, str]]:
    result = []
    seen: dict[tuple[str, str], int] = {}
    for i, address in enumerate(addresses):
        kind = address["type"]
        if kind not in CONTACT_ADDRESS_TYPES:
            raise BadRequest(f"addresses[{i}].type must be one of {', '.join(CONTACT_ADDRESS_TYPES)}")
        target = normalize_target(kind, address["target"])
        if not target:
            raise BadRequest(f"addresses[{i}].target is not a valid {kind} address")
        if (kind, target) in seen:
            raise BadRequest(f"addresses[{i}] repeats addresses[{seen[kind, target]}] ({kind} {target})")
        seen[kind, target] = i
        result.append({"type": kind, "target": target})
    return result


async def _check_addresses_free(customer_id: UUID, contact_id: UUID, addresses: list[dict[str, str]]) -> None:
    """An address belongs to at most one live contact of a customer (409 otherwise), so "the
    contact of an address" is never ambiguous. Call inside the write transaction: the customer's
    row is locked on PostgreSQL, so two writers cannot both find an address free."""
    if not addresses:
        return
    query = Customer.select(Customer.id).where(Customer.id == customer_id)
    if isinstance(current_engine(), PostgresEngine):
        query = query.lock_rows("UPDATE")
    await query.first()
    for address in addresses:
        holder = await find_contact(customer_id, address["type"], address["target"], other_than=contact_id)
        if holder is not None:
            raise Conflict(
                f"address {address['type']} {address['target']} belongs to contact {holder['id']} already"
            )


async def _replace_addresses(customer_id: UUID, contact_id: UUID, addresses: list[dict[str, str]]) -> None:
    await ContactAddress.delete().where(ContactAddress.contact_id == contact_id)
    if addresses:
        await ContactAddress.insert(
            *[
                ContactAddress(
                    id=uuid.uuid4(),
                    contact_id=contact_id,
                    customer_id=customer_id,
                    type=a["type"],
                    target=a["target"],
                    position=i,
                )
                for i, a in enumerate(addresses)
            ]
        )


async def contacts_out(rows: list[dict[str, Any]]) -> list[ContactOut]:
    """Contacts with their addresses, read in one query for all of them."""
    addresses: dict[str, list[ContactAddressOut]] = {str(r["id"]): [] for r in rows}
    if rows:
        for a in (
            await ContactAddress.select(ContactAddress.contact_id, ContactAddress.type, ContactAddress.target)
            .where(ContactAddress.contact_id.is_in([r["id"] for r in rows]))
            .order_by(ContactAddress.position)
        ):
            addresses[str(a["contact_id"])].append(ContactAddressOut(type=a["type"], target=a["target"]))
    return [
        ContactOut(
            id=row["id"],
            customer_id=row["customer_id"],
            name=row["name"],
            detail=row["detail"],
            addresses=addresses[str(row["id"])],
            tm_create=row["tm_create"],
            tm_update=row["tm_update"],
            tm_delete=row["tm_delete"],
        )
        for row in rows
    ]


async def contact_out(row: dict[str, Any]) -> ContactOut:
    return (await contacts_out([row]))[0]


async def create_contact(
    customer_id: UUID, name: str, detail: str, addresses: list[dict[str, str]]
) -> ContactOut:
    addresses = normalize_addresses(addresses)
    contact_id = uuid.uuid4()
    async with transaction(current_engine()):
        await _check_addresses_free(customer_id, contact_id, addresses)
        await Contact.insert(Contact(id=contact_id, customer_id=customer_id, name=name, detail=detail))
        await _replace_addresses(customer_id, contact_id, addresses)
    return await contact_out(await get_scoped(Contact, customer_id, contact_id))


async def get_contact(customer_id: UUID, contact_id: UUID) -> ContactOut:
    return await contact_out(await get_scoped(Contact, customer_id, contact_id))


async def list_contacts(customer_id: UUID, page_size: int, page_token: str) -> tuple[list[ContactOut], str]:
    rows, token = await fetch_page(
        Contact, [Contact.customer_id == customer_id, Contact.tm_delete.is_null()], page_size, page_token
    )
    return await contacts_out(rows), token


async def update_contact(customer_id: UUID, contact_id: UUID, values: dict[str, Any]) -> ContactOut:
    values = dict(values)
    addresses = values.pop("addresses", None)
    if addresses is not None:
        addresses = normalize_addresses(addresses)
    async with transaction(current_engine()):
        row = await update_scoped(Contact, customer_id, contact_id, values)
        if addresses is not None:
            await _check_addresses_free(customer_id, contact_id, addresses)
            await _replace_addresses(customer_id, contact_id, addresses)
    return await contact_out(row)


async def delete_contact(customer_id: UUID, contact_id: UUID) -> ContactOut:
    async with transaction(current_engine()):
        row = await soft_delete(Contact, customer_id, contact_id)
        await ContactAddress.delete().where(ContactAddress.contact_id == contact_id)
    return await contact_out(row)


async def find_contact(
    customer_id: UUID, address_type: str, target: str, other_than: UUID | None = None
) -> dict[str, Any] | None:
    """The live contact (id, name) holding this normalised address, or None. Addresses are unique
    per customer since participants; of contacts that shared one before, the oldest holds it."""
    if not target:
        return None
    conditions = [
        ContactAddress.customer_id == customer_id,
        ContactAddress.type == address_type,
        ContactAddress.target == target,
    ]
    if other_than is not None:
        conditions.append(ContactAddress.contact_id != other_than)
    hit = await ContactAddress.select(ContactAddress.contact_id).where(*conditions).output(as_list=True)
    if not hit:
        return None
    return (
        await Contact.select(Contact.id, Contact.name)
        .where(Contact.id.is_in(hit), Contact.tm_delete.is_null())
        .order_by(Contact.tm_create)
        .first()
    )


async def find_contact_name(customer_id: UUID, address_type: str, target: str) -> str:
    """The name of the contact holding this normalised address, or ""."""
    contact = await find_contact(customer_id, address_type, target)
    return contact["name"] if contact else ""
