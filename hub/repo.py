"""Small shared query helpers: tenant-scoped lookups, soft deletes, unique-violation mapping."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from piccolo.table import Table

from hub.errors import Conflict, NotFound

T = TypeVar("T")


def now() -> datetime:
    return datetime.now(UTC)


def noun(table: type[Table]) -> str:
    return table._meta.tablename.rstrip("s").replace("_", " ")


async def get_scoped(
    table: type[Table], customer_id: UUID, row_id: UUID, include_deleted: bool = False
) -> dict[str, Any]:
    """A row of `customer_id`; another tenant's row is indistinguishable from a missing one."""
    conditions = [table._meta.primary_key == row_id, table.customer_id == customer_id]  # type: ignore[attr-defined]
    if not include_deleted:
        conditions.append(table.tm_delete.is_null())  # type: ignore[attr-defined]
    row = await table.select().where(*conditions).first()
    if row is None:
        raise NotFound(f"{noun(table)} {row_id} not found")
    return row


async def update_scoped(
    table: type[Table], customer_id: UUID, row_id: UUID, values: dict[str, Any]
) -> dict[str, Any]:
    """Partial update of a live row of `customer_id`; returns the row as it is afterwards."""
    await get_scoped(table, customer_id, row_id)
    if values:
        values = {**values, "tm_update": now()}
        await table.update({getattr(table, k): v for k, v in values.items()}).where(
            table._meta.primary_key == row_id  # type: ignore[attr-defined]
        )
    return await get_scoped(table, customer_id, row_id)


async def soft_delete(table: type[Table], customer_id: UUID, row_id: UUID) -> dict[str, Any]:
    await get_scoped(table, customer_id, row_id)
    stamp = now()
    await table.update({table.tm_delete: stamp, table.tm_update: stamp}).where(  # type: ignore[attr-defined]
        table._meta.primary_key == row_id  # type: ignore[attr-defined]
    )
    return await get_scoped(table, customer_id, row_id, include_deleted=True)


async def unique_or_conflict(awaitable: Awaitable[T], message: str) -> T:
    try:
        return await awaitable
    except (asyncpg.UniqueViolationError, sqlite3.IntegrityError) as exc:
        raise Conflict(message) from exc
