"""The assigned inbound path in-process: `create_app` called as an ASGI app (no server, no client
socket), signed Twilio posts to owned conversations, CPU of this process and of the database's
backends per request. Less sensitive to the machine's load than wrk figures, for A/B pairs: run
it from each tree under test (`cd <tree> && python -m tests.bench.inbound_inprocess 3000`).

Prints one line: n, req/s, api_cpu_ms (this process), pg_cpu_ms (every backend of the database)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg

from tests.bench.__main__ import PG_ADMIN_DSN, process_cpu_seconds
from tests.helpers import signed_sms, sms_params

ROOMS = 200
PUBLIC_URL = "http://hub.test"


async def call(app, path: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST through the ASGI app; its status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"hub.test"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("hub.test", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # no disconnect while the answer is written
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"]


async def main(n: int, in_flight: int) -> str:
    name = f"hub_inproc_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = PG_ADMIN_DSN.rpartition("/")[0] + f"/{name}"
    os.environ.update(
        {
            "HUB_DATABASE_URL": dsn,
            "HUB_PUBLIC_URL": PUBLIC_URL,
            "HUB_JWT_SECRET": "bench-secret-0123456789-0123456789",
            "HUB_LOG_LEVEL": "WARNING",
            "HUB_TEMPORAL_ADDRESS": "127.0.0.1:1",  # connected lazily; no flow starts here
        }
    )
    from api.app import create_app
    from hub import accounts, agents, db
    from hub.settings import Settings

    try:
        engine = await db.open_engine(dsn)
        await db.migrate(engine)
        app = create_app(Settings.from_env())
        async with app.lifespan():
            customer = await agents.create_customer("inproc")
            agent = await agents.create_agent(customer["id"], "agent", "password-123", permission=0x20)
            values = {"type": "sms", "number": "+15550009999", "sid": "AC" + "1" * 32, "token": "tok"}
            account = await accounts.create_account(customer["id"], values)
            senders = [f"+1650{i:07d}" for i in range(ROOMS)]

            def post(sender: str, text: str):
                params = sms_params(sender=sender, to="+15550009999", body=text)
                return signed_sms(account["id"], "tok", params, public_url=PUBLIC_URL)

            for sender in senders:
                assert await call(app, *post(sender, "open")) == 200
            conn = await asyncpg.connect(dsn)
            await conn.execute("UPDATE conversations SET owner_type = 'agent', owner_id = $1", agent["id"])
            posts = [post(senders[i % ROOMS], f"m{i}") for i in range(n + 2 * ROOMS)]
            for request in posts[: 2 * ROOMS]:  # warm-up: statements prepared, pool filled
                assert await call(app, *request) == 200
            backends_sql = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
            backends = {r["pid"] for r in await conn.fetch(backends_sql, name)}
            before = {pid: process_cpu_seconds(pid) for pid in backends}
            mine, started = time.process_time(), time.perf_counter()
            gate = asyncio.Semaphore(in_flight)

            async def one(request) -> None:
                async with gate:
                    assert await call(app, *request) == 200

            await asyncio.gather(*(one(request) for request in posts[2 * ROOMS :]))
            elapsed, mine = time.perf_counter() - started, time.process_time() - mine
            backends |= {r["pid"] for r in await conn.fetch(backends_sql, name)}
            pg = sum(process_cpu_seconds(pid) - before.get(pid, 0.0) for pid in backends)
            await conn.close()
        return (
            f"n={n} req/s={n / elapsed:.0f} api_cpu_ms={mine * 1000 / n:.3f} pg_cpu_ms={pg * 1000 / n:.3f} "
            f"load={os.getloadavg()[0]:.1f}"
        )
    finally:
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    print(asyncio.run(main(count, int(os.environ.get("INPROC_IN_FLIGHT", "16")))))
