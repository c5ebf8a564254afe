"""Auth hardening (issue 14, items 1-3): no default JWT secret, failed-login limits, tokens that
end with a password change, and the token-version migration on populated databases."""

from __future__ import annotations

import dataclasses
import importlib
import os
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import argon2
import asyncpg
import httpx
import jwt
import pytest

from api.app import create_app
from api.cli import JWT_SECRET_FILE, with_data_dir_jwt_secret
from api.throttle import LoginThrottle
from hub import agents, auth, db
from hub.auth import read_token
from hub.errors import TooManyRequests
from hub.permissions import ADMIN
from hub.settings import Settings
from tests.conftest import PG_ADMIN_DSN, _database_dsn
from tests.helpers import JWT_SECRET, make_tenant, serving

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "password-123"


# --- 1. the JWT secret -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    "secret",
    [None, "short-secret", "change-me-in-production-please-32b"],
    ids=["unset", "short", "old-default"],
)
def test_serve_and_worker_refuse_to_start_without_a_real_secret(command, secret, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env |= {"HUB_DATA_DIR": str(tmp_path), "HUB_TEMPORAL_ADDRESS": "127.0.0.1:1"}
    if secret is not None:
        env["HUB_JWT_SECRET"] = secret
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "HUB_JWT_SECRET" in lines[0], done.stderr
    assert not (tmp_path / "hub.sqlite").exists(), "refused before touching the database"


def test_the_app_refuses_the_built_in_default():
    with pytest.raises(ValueError, match="HUB_JWT_SECRET"):
        create_app(Settings())


def test_run_keeps_a_random_secret_per_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("HUB_JWT_SECRET", raising=False)
    first = with_data_dir_jwt_secret(Settings(data_dir=str(tmp_path / "one")))
    again = with_data_dir_jwt_secret(Settings(data_dir=str(tmp_path / "one")))
    other = with_data_dir_jwt_secret(Settings(data_dir=str(tmp_path / "two")))
    assert first.jwt_secret_problem() is None and len(first.jwt_secret) >= 32
    # Kept, so tokens survive a restart; never shared by two installs.
    assert again.jwt_secret == first.jwt_secret and other.jwt_secret != first.jwt_secret
    mode = stat.S_IMODE((tmp_path / "one" / JWT_SECRET_FILE).stat().st_mode)
    assert mode == 0o600
    # A secret given in the environment wins.
    monkeypatch.setenv("HUB_JWT_SECRET", JWT_SECRET)
    given = with_data_dir_jwt_secret(Settings(data_dir=str(tmp_path / "one"), jwt_secret=JWT_SECRET))
    assert given.jwt_secret == JWT_SECRET


# --- 2. failed-login limits ------------------------------------------------------------------------


def limited(settings: Settings, **limits) -> Settings:
    """Small limits under a key prefix of their own, so no other test shares the counters."""
    return dataclasses.replace(settings, redis_key_prefix=f"hub-test-{uuid.uuid4().hex}:", **limits)


async def login(http, username: str, password: str):
    return await http.post("/auth/login", json={"username": username, "password": password})


async def test_failed_logins_per_username_end_in_429_and_a_success_resets(settings, pg):
    tenant = await make_tenant()
    victim, other = tenant.agent.username, tenant.other_agent.username
    small = limited(settings, login_max_failures=3, login_max_failures_per_address=1000, login_window_s=60)
    async with serving(small, restore_engine=pg) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            assert [(await login(http, victim, "wrong-password")).status_code for _ in range(3)] == [401] * 3
            refused = await login(http, victim, "wrong-password")
            assert refused.status_code == 429
            assert 0 < int(refused.headers["Retry-After"]) <= 60
            error = refused.json()["error"]
            assert error["status"] == 429 and error["reason"] == "too_many_requests" and error["message"]
            # While limited even the right password is refused: the limit reveals nothing.
            assert (await login(http, victim, PASSWORD)).status_code == 429
            # Another username is not affected.
            assert (await login(http, other, "wrong-password")).status_code == 401
            assert (await login(http, other, "wrong-password")).status_code == 401
            assert (await login(http, other, PASSWORD)).status_code == 200
            # The success reset its count: three more failures before the next 429.
            assert [(await login(http, other, "wrong-password")).status_code for _ in range(4)] == [
                401,
                401,
                401,
                429,
            ]


async def test_failed_logins_per_address_end_in_429(settings, pg):
    tenant = await make_tenant()
    small = limited(settings, login_max_failures=100, login_max_failures_per_address=4, login_window_s=60)
    async with serving(small, restore_engine=pg) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            # Successful logins are not failures: they do not use up the address's allowance.
            assert (await login(http, tenant.admin.username, PASSWORD)).status_code == 200
            ghosts = [f"ghost-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
            statuses = [(await login(http, ghost, "x")).status_code for ghost in ghosts]
            assert statuses == [401, 401, 401, 401, 429]
            assert (await login(http, tenant.admin.username, PASSWORD)).status_code == 429


async def test_wrong_old_passwords_count_as_failed_logins(settings, pg):
    tenant = await make_tenant()
    small = limited(settings, login_max_failures=2, login_max_failures_per_address=1000, login_window_s=60)
    async with serving(small, restore_engine=pg) as url, httpx.AsyncClient(base_url=url) as http:
        me = tenant.agent
        guesses = [await change(http, me, "guess-1234", "new-password") for _ in range(2)]
        assert [r.status_code for r in guesses] == [403, 403]
        assert (await change(http, me, PASSWORD, "new-password")).status_code == 429
        assert (await login(http, me.username, PASSWORD)).status_code == 429


@pytest.mark.parametrize("backend", ["redis", "memory"])
async def test_throttle_backends_count_alike(settings, backend):
    from redis.asyncio import Redis

    small = limited(settings, login_max_failures=2, login_max_failures_per_address=3, login_window_s=30)
    redis = Redis.from_url(settings.redis_url) if backend == "redis" else None
    throttle = LoginThrottle(small, redis)
    try:
        for _ in range(2):
            await throttle.attempt("alice", "10.0.0.1")
        with pytest.raises(TooManyRequests) as refused:
            await throttle.attempt("alice", "10.0.0.1")
        assert 0 < refused.value.retry_after_s <= 30
        # Address 10.0.0.1 has used 3 of 3; a success takes its attempt back.
        await throttle.attempt("bob", "10.0.0.2")
        await throttle.succeeded("bob", "10.0.0.2")
        with pytest.raises(TooManyRequests):
            await throttle.attempt("carol", "10.0.0.1")
    finally:
        if redis is not None:
            await redis.aclose()


class CountingHasher(argon2.PasswordHasher):
    """Argon2 as the hub uses it (the parameters of the hasher in use: the product's, or the
    suite's cheaper one, see tests/conftest.py), recording the parameters of every hash it verifies."""

    def __init__(self) -> None:
        current = auth._hasher
        super().__init__(
            time_cost=current.time_cost,
            memory_cost=current.memory_cost,
            parallelism=current.parallelism,
            hash_len=current.hash_len,
            salt_len=current.salt_len,
            type=current.type,
        )
        self.verified: list[argon2.Parameters] = []

    def verify(self, hash, password):  # noqa: A002 - argon2's own parameter name
        self.verified.append(argon2.extract_parameters(hash))
        return super().verify(hash, password)


async def test_unknown_user_costs_the_same_argon2_work_as_a_wrong_password(client, monkeypatch):
    tenant = await make_tenant()
    hasher = CountingHasher()
    monkeypatch.setattr(auth, "_hasher", hasher)
    wrong = await login(client, tenant.agent.username, "wrong-password")
    unknown = await login(client, f"ghost-{uuid.uuid4().hex}", "wrong-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    # One verification each, of hashes with the same cost parameters: the same time.
    assert len(hasher.verified) == 2
    real = argon2.extract_parameters(await auth.hash_password("x"))
    assert hasher.verified[0] == hasher.verified[1] == real


# --- 3. tokens end with a password change ---------------------------------------------------------


async def change(http, member, old: str, new: str):
    body = {"old_password": old, "new_password": new}
    return await http.post("/auth/password", json=body, headers=member.headers)


async def test_a_plain_agent_changes_its_password_and_older_tokens_end(client):
    tenant = await make_tenant()
    me = tenant.agent
    before = (await login(client, me.username, PASSWORD)).json()["token"]
    wrong = await change(client, me, "not-it-123", "brand-new-pass")
    assert wrong.status_code == 403 and wrong.json()["error"]["reason"] == "forbidden"
    short = await change(client, me, PASSWORD, "short")
    assert short.status_code == 400
    changed = await change(client, me, PASSWORD, "brand-new-pass")
    assert changed.status_code == 200, changed.text
    fresh = changed.json()["token"]
    for old in (me.token, before):
        gone = await client.get("/v1.0/agents", headers={"Authorization": f"Bearer {old}"})
        assert gone.status_code == 401 and "password" in gone.json()["error"]["message"]
    assert (await client.get("/v1.0/agents", headers={"Authorization": f"Bearer {fresh}"})).status_code == 200
    assert (await login(client, me.username, PASSWORD)).status_code == 401
    assert (await login(client, me.username, "brand-new-pass")).status_code == 200
    # Other agents' tokens are untouched.
    assert (await client.get("/v1.0/agents", headers=tenant.other_agent.headers)).status_code == 200


async def test_a_password_set_by_an_admin_ends_the_agents_tokens(client):
    tenant = await make_tenant()
    response = await client.put(
        f"/v1.0/agents/{tenant.agent.id}", json={"password": "reset-by-admin"}, headers=tenant.admin.headers
    )
    assert response.status_code == 200
    assert (await client.get("/v1.0/agents", headers=tenant.agent.headers)).status_code == 401
    # Renaming is not a password change: tokens stay.
    renamed = await client.put(
        f"/v1.0/agents/{tenant.other_agent.id}", json={"name": "renamed"}, headers=tenant.admin.headers
    )
    assert renamed.status_code == 200
    assert (await client.get("/v1.0/agents", headers=tenant.other_agent.headers)).status_code == 200


async def test_a_token_with_a_malformed_version_is_refused(client):
    tenant = await make_tenant()
    now = int(time.time())
    for version in ("0", 0.0, None, [0]):
        claims = {"sub": str(tenant.admin.id), "ver": version, "iat": now, "exp": now + 600}
        token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
        response = await client.get("/v1.0/agents", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, version


def _migration_ids() -> list[str]:
    folder = REPO / "hub" / "piccolo_migrations"
    modules = [importlib.import_module(f"hub.piccolo_migrations.{p.stem}") for p in folder.glob("hub_*.py")]
    return sorted(m.ID for m in modules)


TOKEN_VERSION_MIGRATION = "2026-12-01T10:10:00:000000"


@pytest.fixture(params=["postgres", "sqlite"])
async def unmigrated_url(request, pg_engine):
    """A new database of each engine; the tables are bound back to the suite's afterwards."""
    if request.param == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'old.sqlite'}"
    else:
        name = f"hub_test_mig_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        try:
            yield _database_dsn(name)
        finally:
            conn = await asyncpg.connect(PG_ADMIN_DSN)
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.close()
    db.use_engine(pg_engine)


async def test_token_version_migration_keeps_existing_agents_and_their_tokens(unmigrated_url):
    from piccolo.apps.migrations.commands.forwards import run_forwards

    ids = _migration_ids()
    previous = ids[ids.index(TOKEN_VERSION_MIGRATION) - 1]
    engine = await db.open_engine(unmigrated_url)
    await db.start(engine, pool_size=2)
    try:
        db.use_engine(engine)
        assert (await run_forwards(app_name="hub", migration_id=previous)).success
        agent_id, customer_id = uuid.uuid4(), uuid.uuid4()
        password_hash = await auth.hash_password(PASSWORD)
        await engine.run_ddl(
            f"INSERT INTO customers (id, name) VALUES ('{customer_id}', 'old customer')"
        )
        await engine.run_ddl(
            "INSERT INTO agents (id, customer_id, username, password_hash, name, detail, permission) "
            f"VALUES ('{agent_id}', '{customer_id}', 'old-{agent_id.hex[:8]}', '{password_hash}', "
            f"'old', '', {ADMIN})"
        )
        # A token as the hub issued them before versions existed: no "ver" claim.
        now = int(time.time())
        old_token = jwt.encode(
            {"sub": str(agent_id), "customer_id": str(customer_id), "iat": now, "exp": now + 600},
            JWT_SECRET,
            algorithm="HS256",
        )
        await db.migrate(engine)
        row = await agents.get_active_agent(agent_id)
        assert row["token_version"] == 0 and row["password_hash"] == password_hash
        assert read_token(old_token, JWT_SECRET).version == row["token_version"]  # still accepted
        assert (await agents.authenticate(row["username"], PASSWORD))["id"] == agent_id
        # The first password change ends it (the increment works on this engine).
        await agents.update_agent(customer_id, agent_id, {"password": "a-new-password"})
        assert (await agents.get_active_agent(agent_id))["token_version"] == 1
        changed = await agents.change_own_password(agent_id, "a-new-password", "another-password")
        assert changed["token_version"] == 2
    finally:
        await db.stop(engine)
