"""The Litestar application factory; database engine and other clients live in its lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig
from piccolo.engine.postgres import PostgresEngine
from redis.asyncio import Redis

from api import openapi, temporal
from api.controllers import hooks
from api.controllers.accounts import AccountController
from api.controllers.agents import AgentController
from api.controllers.auth import AuthController
from api.controllers.codec import CodecController
from api.controllers.contacts import ContactController
from api.controllers.conversations import (
    ConversationController,
    MessageController,
    ServiceAgentConversationController,
)
from api.controllers.events import EventStreamController
from api.controllers.flows import ActiveflowController, FlowController
from api.controllers.hooks import HookController
from api.controllers.media import MediaController
from api.controllers.webhooks import CustomerController, WebhookDeliveryController
from api.cors import cors_config
from api.deps import provide_caller
from api.errors import EXCEPTION_HANDLERS, request_id_middleware
from api.inbox import controller as inbox
from api.inbox.session import SessionCSRFMiddleware, csrf_config, session_cookie_name
from api.metrics import metrics_endpoint, request_metrics_middleware
from api.readiness import Readiness, readyz
from api.stream import channels_plugin
from api.strict import strict_input
from api.throttle import LoginThrottle
from hub import accounts, db, inbound
from hub.settings import Settings

log = logging.getLogger("hub.api")


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def allowed_methods(request: Request) -> Response:
    """OPTIONS: every method of the path. Litestar's own answer lists only the methods known when
    the path's first handler was registered (its closure keeps that early route)."""
    template = request.scope["path_template"]
    methods = {m for route in request.app.routes if route.path_format == template for m in route.methods}
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})


async def before_request(request: Request) -> Response | None:
    if request.method == "OPTIONS" and "access-control-request-method" not in request.headers:
        # A CORS preflight is Litestar's (its CORS config answers it); a plain OPTIONS lists methods.
        return allowed_methods(request)
    await strict_input(request)
    return None


def settle_heap() -> None:
    """Moves what start-up made (modules, the app, the engine: ~190,000 objects) out of the
    garbage collector's reach. Each full collection otherwise walks all of them, 30-600 ms on
    these machines, a pause that lands on whichever requests are in flight: two per thousand
    lists, enough to set their p99. Collected once first, so no start-up garbage stays."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    if problem := settings.jwt_secret_problem():
        raise ValueError(problem)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        openapi.install(app)
        engine = await db.open_engine(settings.resolved_database_url)
        await db.start(engine, settings.db_pool_size)
        inbound.configure_group_commit(settings.inbound_group_commit_max)
        # Other API processes' account changes reach this one's hook-account cache (PostgreSQL).
        account_changes = accounts.AccountChanges(engine) if isinstance(engine, PostgresEngine) else None
        if account_changes is not None:
            account_changes.start()
        app.state.engine = engine
        app.state.temporal = await temporal.connect(settings, lazy=True)
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(settings.provider_timeout_s))
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        app.state.login_throttle = LoginThrottle(settings, redis)
        app.state.readiness = Readiness(settings, engine, app.state.temporal)
        settle_heap()
        try:
            yield
        finally:
            await app.state.readiness.close()
            if redis is not None:
                await redis.aclose()
            await app.state.http.aclose()
            await hooks.finish_recording()
            if account_changes is not None:
                await account_changes.stop()
            await db.stop(engine)

    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics_endpoint,
            CodecController,
            AuthController,
            AgentController,
            ContactController,
            AccountController,
            ConversationController,
            ServiceAgentConversationController,
            MessageController,
            HookController,
            MediaController,
            FlowController,
            ActiveflowController,
            CustomerController,
            WebhookDeliveryController,
            EventStreamController,
            inbox.InboxController,
            inbox.static_files(),
        ],
        plugins=[channels_plugin(settings)],
        cors_config=cors_config(settings),
        dependencies={"caller": Provide(provide_caller)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[
            request_id_middleware,
            request_metrics_middleware,
            # CSRF for the inbox and for API requests its session cookie authenticates (only).
            DefineMiddleware(
                SessionCSRFMiddleware,
                config=csrf_config(settings),
                session_cookie=session_cookie_name(settings),
            ),
        ],
        template_config=TemplateConfig(
            directory=inbox.TEMPLATES, engine=JinjaTemplateEngine, engine_callback=inbox.register_filters
        ),
        before_request=before_request,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="Conversation hub",
            version="1.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"BearerToken": []}],
        ),
        debug=False,
        # Logging is configured once by the `hub` command (HUB_LOG_LEVEL); Litestar's default
        # would put the root logger at INFO behind a queue thread, which costs ~20% CPU under load.
        logging_config=None,
    )
    app.state.settings = settings
    return app
