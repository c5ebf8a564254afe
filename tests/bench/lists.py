"""The list part of `make bench` alone: `python -m tests.bench.lists` prints one JSON object of the
list figures (p50/p99 per filter over HTTP, p99 through the query function, the load average).

It loads `BENCH_CONVERSATIONS_N` conversations (1,000,000) into a fresh database like the bench, or
reuses the database named by `BENCH_LIST_DB` (created and kept if it does not exist yet; it is
migrated first, so an older copy also times the pending migrations: `migrate_s`). Only the API
(`hub serve`) is started; the lists need no Temporal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx

from hub import accounts, agents, db
from hub.auth import issue_token
from tests.bench.__main__ import (
    CONVERSATIONS_N,
    LIST_SAMPLES,
    REPO,
    SELF_NUMBER,
    fill_conversations,
    log,
    measure_lists,
    wait_http,
)
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import free_port

SECRET = "bench-secret-0123456789-0123456789"
META = "CREATE TABLE IF NOT EXISTS bench_lists_meta (id INT PRIMARY KEY, value TEXT NOT NULL)"


async def setup(conn) -> dict:
    """The customer, accounts and owners of the list data (made once per database)."""
    await conn.execute(META)
    if stored := await conn.fetchval("SELECT value FROM bench_lists_meta WHERE id = 1"):
        return json.loads(stored)
    customer = await agents.create_customer("bench lists")
    admin = await agents.create_agent(
        customer["id"], f"bench-{uuid.uuid4().hex[:6]}", "password-123", permission=0x20
    )
    made = [
        await accounts.create_account(
            customer["id"], {"type": "sms", "number": SELF_NUMBER, "sid": "AC" + "1" * 32, "token": "t1"}
        ),
        await accounts.create_account(
            customer["id"], {"type": "sms", "number": "+15550008888", "sid": "AC" + "2" * 32, "token": "t2"}
        ),
        await accounts.create_account(
            customer["id"], {"type": "line", "name": "bench LINE", "secret": "s" * 32, "token": "t" * 48}
        ),
    ]
    meta = {
        "customer_id": str(customer["id"]),
        "admin_id": str(admin["id"]),
        "accounts": [str(a["id"]) for a in made],
        "owners": [str(admin["id"])] + [str(uuid.uuid4()) for _ in range(9)],
    }
    await conn.execute("INSERT INTO bench_lists_meta (id, value) VALUES (1, $1)", json.dumps(meta))
    return meta


async def main() -> dict:
    load_start = os.getloadavg()
    name = os.environ.get("BENCH_LIST_DB") or f"hub_bench_lists_{uuid.uuid4().hex[:8]}"
    admin_conn = await asyncpg.connect(PG_ADMIN_DSN)
    if not await admin_conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        await admin_conn.execute(f'CREATE DATABASE "{name}"')
    await admin_conn.close()
    dsn = PG_ADMIN_DSN.rpartition("/")[0] + f"/{name}"
    engine = await db.open_engine(dsn)
    started = time.perf_counter()
    await db.migrate(engine)
    migrate_s = time.perf_counter() - started
    await db.start(engine, pool_size=10)
    conn = await asyncpg.connect(dsn)
    api = None
    try:
        meta = await setup(conn)
        customer_id = uuid.UUID(meta["customer_id"])
        accounts_ = [uuid.UUID(a) for a in meta["accounts"]]
        owners = [uuid.UUID(o) for o in meta["owners"]]
        started = time.perf_counter()
        existing = await conn.fetchval(
            "SELECT count(*) FROM conversations WHERE customer_id = $1", customer_id
        )
        if existing < CONVERSATIONS_N:  # its tag rows and participants are derived from all of them
            await fill_conversations(conn, customer_id, accounts_, owners, CONVERSATIONS_N - existing)
        load_s = time.perf_counter() - started
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_DATABASE_URL": dsn,
            "HUB_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "HUB_HTTP_PORT": str(port),
            "HUB_JWT_SECRET": SECRET,
            "HUB_LOG_LEVEL": "WARNING",
            "HUB_DB_POOL_SIZE": "20",
        }
        if os.environ.get("BENCH_API_PROCESSES"):
            env["HUB_HTTP_WORKERS"] = os.environ["BENCH_API_PROCESSES"]
        api = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"], env=env, cwd=REPO, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz")
        token = issue_token(uuid.UUID(meta["admin_id"]), customer_id, SECRET, 3600)
        log(f"measuring {LIST_SAMPLES} lists per filter")
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            p50, p99, query_p99, query_p50 = await measure_lists(
                http, {"Authorization": f"Bearer {token}"}, customer_id, accounts_, owners
            )
        return {
            "list_conversations_p50_ms_by_filter": p50,
            "list_conversations_p99_ms_by_filter": p99,
            "list_conversations_query_p99_ms_by_filter": query_p99,
            "list_conversations_query_p50_ms_by_filter": query_p50,
            "conversations_in_db": await conn.fetchval("SELECT count(*) FROM conversations"),
            "conversations_load_s": round(load_s, 1),
            "migrate_s": round(migrate_s, 1),
            "database": name,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)
        await conn.close()
        await db.stop(engine)
        if not os.environ.get("BENCH_LIST_DB"):
            admin_conn = await asyncpg.connect(PG_ADMIN_DSN)
            await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin_conn.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
