"""Request dependencies: the authenticated caller (Bearer header, ?token= or the inbox's session
cookie), settings."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Request
from litestar.params import HeaderParameter, QueryParameter

from api import logs
from api.inbox.session import accepted_token
from api.strict import check_input
from hub import agents
from hub.auth import read_token
from hub.errors import Unauthorized
from hub.permissions import is_admin_or_manager, require_admin_or_manager
from hub.settings import Settings


class Caller(msgspec.Struct, frozen=True):
    agent_id: UUID
    customer_id: UUID
    permission: int

    @property
    def is_admin_or_manager(self) -> bool:
        return is_admin_or_manager(self.permission)

    def require_admin_or_manager(self) -> None:
        require_admin_or_manager(self.permission)


async def provide_caller(
    request: Request,
    authorization: Annotated[
        str | None, HeaderParameter(name="Authorization", description="Bearer <jwt>", required=False)
    ] = None,
    token: Annotated[
        str | None, QueryParameter(name="token", description="The JWT, for clients that cannot set headers")
    ] = None,
) -> Caller:
    jwt_token = token
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("Authorization header must be 'Bearer <token>'")
        jwt_token = value.strip()
    if not jwt_token:
        # The inbox's session cookie, when api.inbox.session let this request use it.
        jwt_token = accepted_token(request.scope)
    if not jwt_token:
        raise Unauthorized("missing token: send 'Authorization: Bearer <token>' or ?token=")
    caller = await caller_for_token(request, jwt_token)
    await check_input(request)
    return caller


async def caller_for_token(request: Request, jwt_token: str) -> Caller:
    """The live agent a token names (401 when it is invalid, expired, or from before a password
    change)."""
    settings: Settings = request.app.state.settings
    claims = read_token(jwt_token, settings.jwt_secret)
    agent = await agents.get_token_agent(claims.agent_id)
    if agent is None:
        raise Unauthorized("the token's agent no longer exists")
    if claims.version != agent["token_version"]:
        raise Unauthorized("the token was issued before the password changed: log in again")
    logs.bind(customer_id=agent["customer_id"])
    return Caller(agent_id=agent["id"], customer_id=agent["customer_id"], permission=agent["permission"])


def provide_settings(request: Request) -> Settings:
    return request.app.state.settings
