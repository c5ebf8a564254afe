"""GET /readyz: whether the database, Temporal and (when configured) Redis answer right now.

Each check is bounded in time, so a hung dependency makes the answer 503, not a hung probe.
Nothing is cached: a dependency that comes back makes the next probe 200 without a restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from litestar import Request, Response, get
from piccolo.engine.postgres import PostgresEngine
from redis.asyncio import Redis
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from api.errors import envelope
from hub.settings import Settings

CHECK_TIMEOUT_S = 1.5


class Readiness:
    """The checks of one API process; owns a small Redis client of its own."""

    def __init__(self, settings: Settings, engine, temporal: Client) -> None:
        self.engine = engine
        self.temporal = temporal
        self.database = "postgresql" if isinstance(engine, PostgresEngine) else "sqlite"
        self.redis = (
            Redis.from_url(
                settings.redis_url,
                socket_timeout=CHECK_TIMEOUT_S,
                socket_connect_timeout=CHECK_TIMEOUT_S,
                client_name="hub-readiness",
            )
            if settings.redis_url
            else None
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    async def _database(self) -> None:
        await self.engine.run_ddl("SELECT 1")

    async def _temporal(self) -> None:
        await self.temporal.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=CHECK_TIMEOUT_S)
        )

    async def _redis(self) -> None:
        assert self.redis is not None
        await self.redis.ping()

    async def check(self) -> dict[str, str]:
        """{dependency: "ok" or why not}, all checked at once. A check still running at the
        deadline is cancelled without waiting for it (its cleanup may hang as well)."""
        checks = {self.database: self._database(), "temporal": self._temporal()}
        if self.redis is not None:
            checks["redis"] = self._redis()
        tasks = {name: asyncio.ensure_future(check) for name, check in checks.items()}
        await asyncio.wait(tasks.values(), timeout=CHECK_TIMEOUT_S)
        outcomes = {}
        for name, task in tasks.items():
            if task.done():
                outcomes[name] = _outcome(task.exception())
            else:
                task.cancel()
                task.add_done_callback(_consume)
                outcomes[name] = f"no answer within {CHECK_TIMEOUT_S} s"
        return outcomes


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _outcome(result: BaseException | None) -> str:
    if result is None:
        return "ok"
    if isinstance(result, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_S} s"
    text = str(result).splitlines()[0][:200] if str(result) else ""
    return f"{result.__class__.__name__}: {text}" if text else result.__class__.__name__


NAMES = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "temporal": "Temporal", "redis": "Redis"}


@get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> Response:
    checks = await request.app.state.readiness.check()
    down = [name for name, outcome in checks.items() if outcome != "ok"]
    if not down:
        return Response({"status": "ready", "checks": checks})
    message = "not ready: " + ", ".join(f"{NAMES[name]} unreachable ({checks[name]})" for name in down)
    response = envelope(request, 503, message, "service_unavailable")
    response.content = {**response.content, "checks": checks}
    response.headers["Retry-After"] = "1"
    return response
