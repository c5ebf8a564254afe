"""POST /auth/login: username and password for a JWT."""

from litestar import Controller, Request, post
from litestar.params import JSONBody

from api.schemas import LoginRequest, TokenResponse
from hub import agents
from hub.auth import issue_token
from hub.settings import Settings


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/login", status_code=200, summary="Log in and receive a JWT (HS256, 7 days)")
    async def login(self, request: Request, data: JSONBody[LoginRequest]) -> TokenResponse:
        settings: Settings = request.app.state.settings
        agent = await agents.authenticate(data.username, data.password)
        return TokenResponse(
            token=issue_token(
                agent["id"], agent["customer_id"], settings.jwt_secret, settings.jwt_ttl_seconds
            )
        )
