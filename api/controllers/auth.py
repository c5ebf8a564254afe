"""/auth: log in for a JWT (failed attempts limited), and change one's own password."""

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from api.deps import Caller
from api.schemas import LoginRequest, PasswordChange, TokenResponse
from api.throttle import LoginThrottle
from hub import agents
from hub.auth import issue_token
from hub.settings import Settings

THROTTLED = ResponseSpec(None, description="Too many failed logins; retry after `Retry-After` seconds")


def token_for(settings: Settings, agent: dict) -> TokenResponse:
    return TokenResponse(
        token=issue_token(
            agent["id"],
            agent["customer_id"],
            settings.jwt_secret,
            settings.jwt_ttl_seconds,
            agent["token_version"],
        )
    )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/login",
        status_code=200,
        summary="Log in and receive a JWT (HS256, 7 days)",
        responses={401: ResponseSpec(None, description="Wrong username or password"), 429: THROTTLED},
    )
    async def login(self, request: Request, data: JSONBody[LoginRequest]) -> TokenResponse:
        throttle: LoginThrottle = request.app.state.login_throttle
        address = client_address(request)
        await throttle.attempt(data.username, address)
        agent = await agents.authenticate(data.username, data.password)
        await throttle.succeeded(data.username, address)
        return token_for(request.app.state.settings, agent)

    @post(
        "/password",
        status_code=200,
        summary="Change the caller's own password; tokens issued before it stop working",
        description="Proves the old password (wrong: 403, counted like a failed login), sets the new "
        "one and answers a fresh token: every token issued before answers 401 from now on.",
        responses={429: THROTTLED},
    )
    async def change_password(
        self, request: Request, caller: NamedDependency[Caller], data: JSONBody[PasswordChange]
    ) -> TokenResponse:
        throttle: LoginThrottle = request.app.state.login_throttle
        agent = await agents.get_agent(caller.customer_id, caller.agent_id)
        address = client_address(request)
        await throttle.attempt(agent["username"], address)
        agent = await agents.change_own_password(caller.agent_id, data.old_password, data.new_password)
        await throttle.succeeded(agent["username"], address)
        return token_for(request.app.state.settings, agent)
