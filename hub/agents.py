"""Customers (tenants) and their agents: creation, login, bootstrap, management."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from piccolo.engine.postgres import PostgresEngine

from hub import auth, conversations
from hub.db import current_engine, pg_fetch, transaction
from hub.errors import BadRequest, Conflict, Forbidden, Unauthorized
from hub.pagination import fetch_page
from hub.permissions import ADMIN, ALL_BITS
from hub.repo import get_scoped, soft_delete, unique_or_conflict, update_scoped
from hub.tables import Agent, Customer


def check_permission_bits(permission: int) -> int:
    if permission & ~ALL_BITS or permission < 0:
        raise BadRequest("permission may only combine admin (0x20) and manager (0x40)")
    return permission


async def create_customer(name: str) -> dict[str, Any]:
    customer = Customer(id=uuid.uuid4(), name=name)
    await customer.save()
    return await Customer.select().where(Customer.id == customer.id).first()


async def get_customer(customer_id: UUID) -> dict[str, Any] | None:
    return await Customer.select().where(Customer.id == customer_id).first()


async def create_agent(
    customer_id: UUID,
    username: str,
    password: str,
    name: str = "",
    detail: str = "",
    permission: int = 0,
) -> dict[str, Any]:
    check_permission_bits(permission)
    taken = f"username {username!r} is already taken"
    if await Agent.exists().where(Agent.username == username):
        raise Conflict(taken)
    agent = Agent(
        id=uuid.uuid4(),
        customer_id=customer_id,
        username=username,
        password_hash=await auth.hash_password(password),
        name=name,
        detail=detail,
        permission=permission,
    )
    await unique_or_conflict(agent.save(), taken)
    return await get_scoped(Agent, customer_id, agent.id)


async def bootstrap(customer_name: str, username: str, password: str) -> tuple[dict, dict]:
    """The first customer of a deployment and its admin."""
    if await Agent.exists().where(Agent.username == username):
        raise Conflict(f"username {username!r} is already taken")
    customer = await create_customer(customer_name)
    agent = await create_agent(customer["id"], username, password, name=username, permission=ADMIN)
    return customer, agent


async def authenticate(username: str, password: str) -> dict[str, Any]:
    row = await Agent.select().where(Agent.username == username, Agent.tm_delete.is_null()).first()
    # Verify against a dummy hash for unknown users so timing does not reveal usernames.
    password_hash = row["password_hash"] if row else auth.dummy_hash()
    if not await auth.verify_password(password_hash, password) or row is None:
        raise Unauthorized("wrong username or password")
    return row


async def _password_values(password: str) -> dict[str, Any]:
    # A new password ends every token issued before it (they carry the older version).
    return {"password_hash": await auth.hash_password(password), "token_version": Agent.token_version + 1}


async def change_own_password(agent_id: UUID, old_password: str, new_password: str) -> dict[str, Any]:
    """The agent proves it knows its password, then sets a new one; returns the updated row."""
    row = await get_active_agent(agent_id)
    if row is None:
        raise Unauthorized("the token's agent no longer exists")
    if not await auth.verify_password(row["password_hash"], old_password):
        raise Forbidden("old_password is wrong")
    return await update_scoped(Agent, row["customer_id"], agent_id, await _password_values(new_password))


async def get_active_agent(agent_id: UUID) -> dict[str, Any] | None:
    return await Agent.select().where(Agent.id == agent_id, Agent.tm_delete.is_null()).first()


# What a request's caller needs of the agent its token names; on PostgreSQL one prepared
# statement (hub.db.pg_fetch): every API request reads it.
_TOKEN_AGENT = (
    "SELECT id, customer_id, permission, token_version FROM agents WHERE id = $1 AND tm_delete IS NULL"
)


async def get_token_agent(agent_id: UUID) -> dict[str, Any] | None:
    """The live agent's id, customer_id, permission and token_version (None when it is deleted
    or unknown)."""
    engine = current_engine()
    if isinstance(engine, PostgresEngine):
        rows = await pg_fetch(engine, _TOKEN_AGENT, [agent_id])
        return dict(rows[0]) if rows else None
    return (
        await Agent.select(Agent.id, Agent.customer_id, Agent.permission, Agent.token_version)
        .where(Agent.id == agent_id, Agent.tm_delete.is_null())
        .first()
    )


async def get_agent(customer_id: UUID, agent_id: UUID) -> dict[str, Any]:
    return await get_scoped(Agent, customer_id, agent_id)


async def list_agents(customer_id: UUID, page_size: int, page_token: str):
    return await fetch_page(
        Agent, [Agent.customer_id == customer_id, Agent.tm_delete.is_null()], page_size, page_token
    )


async def update_agent(customer_id: UUID, agent_id: UUID, values: dict[str, Any]) -> dict[str, Any]:
    values = dict(values)
    if "permission" in values:
        check_permission_bits(values["permission"])
    if "password" in values:
        values.update(await _password_values(values.pop("password")))
    return await update_scoped(Agent, customer_id, agent_id, values)


async def delete_agent(customer_id: UUID, agent_id: UUID) -> dict[str, Any]:
    """Soft-deletes the agent and hands its conversations back to the flows."""
    async with transaction(current_engine()):
        row = await soft_delete(Agent, customer_id, agent_id)
        await conversations.unassign_all(customer_id, agent_id)
    return row

