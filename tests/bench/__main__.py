"""`make bench`: starts the parts like CI does and prints one JSON object of figures.

PostgreSQL must run on 127.0.0.1:5432 (as for the tests); a Temporal dev server, the fake
providers, the API (`hub serve`) and the worker (`hub worker`) are started here."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.embedded import temporal_binary
from api.fakes import start_fakes
from hub import accounts, agents, db, flows
from hub.actions import ActionIn
from hub.auth import issue_token
from hub.settings import Settings
from hub.tables import Message
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import free_port, signed_sms, sms_params

REPO = Path(__file__).resolve().parents[2]
INBOUND_N = int(os.environ.get("BENCH_INBOUND_N", "200"))
ASSIGNED_N = int(os.environ.get("BENCH_ASSIGNED_N", "1000"))
BARE_N = int(os.environ.get("BENCH_BARE_N", "200"))
CONVERSATIONS_N = int(os.environ.get("BENCH_CONVERSATIONS_N", "100000"))
CONCURRENCY = 20
# Assigned traffic spreads over this many conversations (each one's writes are serialised).
ASSIGNED_ROOMS = 200
ASSIGNED_CONCURRENCY = 50


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else 0.0


@dataclass
class BareInput:
    n: int = 0


@activity.defn(name="bench_noop")
async def bench_noop(data: BareInput) -> int:
    return data.n


@workflow.defn(name="BenchBare")
class BenchBare:
    @workflow.run
    async def run(self, data: BareInput) -> int:
        return await workflow.execute_activity(bench_noop, data, start_to_close_timeout=timedelta(seconds=30))


async def bounded(n: int, make, limit: int = CONCURRENCY) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(i):
        async with gate:
            return await make(i)

    return await asyncio.gather(*[one(i) for i in range(n)])


async def temporal_bare(client: Client) -> float:
    queue = f"bench-bare-{uuid.uuid4().hex[:6]}"
    # The bench's own module is __main__; the sandbox cannot re-import it, nor need it here.
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BenchBare],
        activities=[bench_noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        started = time.perf_counter()
        await bounded(
            BARE_N,
            lambda i: client.execute_workflow(
                BenchBare.run, BareInput(i), id=f"bench-bare-{uuid.uuid4()}", task_queue=queue
            ),
        )
        return BARE_N / (time.perf_counter() - started)


async def pg_bare_insert(dsn: str) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_rows (id uuid PRIMARY KEY, body text)")
    n = 5000
    started = time.perf_counter()
    await bounded(n, lambda i: pool.execute("INSERT INTO bench_rows VALUES ($1, $2)", uuid.uuid4(), "x"), 8)
    rate = n / (time.perf_counter() - started)
    await pool.close()
    return rate


def rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def wait_http(url: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not up")
            await asyncio.sleep(0.2)


async def main() -> dict:
    name = f"hub_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = PG_ADMIN_DSN.rpartition("/")[0] + f"/{name}"
    procs: list[subprocess.Popen] = []
    fakes = None
    try:
        t_port, api_port, sms_port, line_port = free_port(), free_port(), free_port(), free_port()
        log("starting Temporal dev server (in memory)")
        procs.append(
            subprocess.Popen(
                [
                    temporal_binary(),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(t_port),
                    "--log-level",
                    "error",
                    *sum(
                        (
                            ["--search-attribute", f"{k}=Keyword"]
                            for k in ("CustomerId", "ConversationId", "FlowId", "AccountId")
                        ),
                        [],
                    ),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        settings = Settings(
            database_url=dsn,
            temporal_address=f"127.0.0.1:{t_port}",
            http_port=api_port,
            sms_api_url=f"http://127.0.0.1:{sms_port}",
            line_api_url=f"http://127.0.0.1:{line_port}",
            jwt_secret="bench-secret-0123456789-0123456789",
        )
        engine = await db.open_engine(dsn)
        await db.migrate(engine)
        await db.start(engine, pool_size=10)
        fakes = await start_fakes(sms_port, line_port)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_DATABASE_URL": dsn,
            "HUB_TEMPORAL_ADDRESS": settings.temporal_address,
            "HUB_HTTP_PORT": str(api_port),
            "HUB_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
            "HUB_SMS_API_URL": settings.sms_api_url,
            "HUB_LINE_API_URL": settings.line_api_url,
            "HUB_JWT_SECRET": settings.jwt_secret,
            # Several workers on one machine: no metrics port each (the default 9000 would clash).
            "HUB_WORKER_METRICS_PORT": "0",
            "HUB_LOG_LEVEL": "WARNING",
            "HUB_DB_POOL_SIZE": "20",
            "HUB_HTTP_WORKERS": os.environ.get("BENCH_API_PROCESSES", "1"),
        }
        client = None
        for _ in range(100):
            try:
                client = await Client.connect(settings.temporal_address)
                break
            except Exception:
                await asyncio.sleep(0.2)
        log("starting API and worker")
        api = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"], env=env, cwd=REPO, start_new_session=True
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker"], env=env, cwd=REPO, start_new_session=True
        )
        procs += [api, worker]
        base = f"http://127.0.0.1:{api_port}"
        await wait_http(f"{base}/healthz")

        log("measuring the bare ceilings")
        bare = await temporal_bare(client)
        pg_rate = await pg_bare_insert(dsn)

        customer = await agents.create_customer("bench")
        admin_agent = await agents.create_agent(
            customer["id"], f"bench-{uuid.uuid4().hex[:6]}", "password-123", permission=0x20
        )
        token = issue_token(admin_agent["id"], customer["id"], settings.jwt_secret, 3600)
        auth = {"Authorization": f"Bearer {token}"}
        auth_token = "bench-auth-token"
        flow = await flows.create_flow(
            customer["id"],
            "bench reply",
            "",
            [ActionIn(id="reply", type="conversation_send", option={"text": "ok ${message.text}"})],
        )
        account = await accounts.create_account(
            customer["id"],
            {
                "type": "sms",
                "number": "+15550009999",
                "sid": "AC" + "1" * 32,
                "token": auth_token,
                "message_flow_id": flow["id"],
            },
        )
        # Several small clients: one httpx pool with many connections costs more CPU than the hub.
        clients = [
            httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=16), timeout=60)
            for _ in range(4)
        ]
        async with clients[0] as http, clients[1], clients[2], clients[3]:

            async def post_inbound(sender: str, body: str) -> float:
                # Signed for the hub's public URL, as the provider would.
                params = sms_params(sender=sender, body=body)
                path, payload, headers = signed_sms(account["id"], auth_token, params, public_url=base)
                client = clients[hash(sender) % len(clients)]
                t0 = time.perf_counter()
                response = await client.post(path, content=payload, headers=headers)
                assert response.status_code == 200, response.text
                return time.perf_counter() - t0

            log(f"inbound to unassigned conversations with a one-action flow: {INBOUND_N}")
            sent_at: dict[str, float] = {}

            async def unassigned(i: int) -> float:
                sender = f"+1415{i:07d}"
                sent_at[sender] = time.perf_counter()
                return await post_inbound(sender, f"u{i}")

            started = time.perf_counter()
            await bounded(INBOUND_N, unassigned)
            latencies = await wait_for_replies(engine, customer["id"], sent_at)
            elapsed = max(sent_at[s] + latencies[s] for s in latencies) - started
            inbound_unassigned = INBOUND_N / elapsed
            lat = list(latencies.values())

            log(f"inbound to assigned conversations: {ASSIGNED_N}")
            await accounts.update_account(customer["id"], account["id"], {"message_flow_id": None})
            senders = [f"+1650{i:07d}" for i in range(ASSIGNED_ROOMS)]
            await bounded(len(senders), lambda i: post_inbound(senders[i], "open"))
            rows = []
            page = (await http.get("/v1.0/conversations?page_size=100", headers=auth)).json()
            rows += page["result"]
            while page["next_page_token"]:
                page = (
                    await http.get(
                        f"/v1.0/conversations?page_size=100&page_token={page['next_page_token']}",
                        headers=auth,
                    )
                ).json()
                rows += page["result"]
            for row in rows:
                await http.put(
                    f"/v1.0/conversations/{row['id']}",
                    json={"owner_id": str(admin_agent["id"])},
                    headers=auth,
                )
            started = time.perf_counter()
            assigned_lat = await bounded(
                ASSIGNED_N, lambda i: post_inbound(senders[i % ASSIGNED_ROOMS], f"a{i}"), ASSIGNED_CONCURRENCY
            )
            inbound_assigned = ASSIGNED_N / (time.perf_counter() - started)

            log(f"listing with {CONVERSATIONS_N} conversations")
            await fill_conversations(dsn, customer["id"], account["id"], CONVERSATIONS_N)
            list_ms = []
            for _ in range(300):
                t0 = time.perf_counter()
                response = await http.get("/v1.0/conversations?page_size=100", headers=auth)
                list_ms.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
        result = {
            "inbound_unassigned_per_s": round(inbound_unassigned, 1),
            "inbound_unassigned_p50_ms": round(statistics.median(lat) * 1000, 1),
            "inbound_unassigned_p99_ms": round(percentile(lat, 0.99) * 1000, 1),
            "inbound_assigned_per_s": round(inbound_assigned, 1),
            "inbound_assigned_p50_ms": round(statistics.median(assigned_lat) * 1000, 1),
            "inbound_assigned_p99_ms": round(percentile(assigned_lat, 0.99) * 1000, 1),
            "temporal_bare_per_s": round(bare, 1),
            "pg_bare_insert_per_s": round(pg_rate, 1),
            "list_conversations_p50_ms": round(statistics.median(list_ms), 2),
            "list_conversations_p99_ms": round(percentile(list_ms, 0.99), 2),
            "conversations_in_db": CONVERSATIONS_N,
            "api_peak_rss_mb": rss_peak_mb(api.pid),
            "worker_peak_rss_mb": rss_peak_mb(worker.pid),
        }
        result["targets"] = {
            "inbound_unassigned >= 0.5 x temporal_bare": result["inbound_unassigned_per_s"] >= 0.5 * bare,
            "inbound_assigned >= 0.3 x pg_bare_insert": result["inbound_assigned_per_s"] >= 0.3 * pg_rate,
            "list p99 < 20 ms": result["list_conversations_p99_ms"] < 20,
        }
        await db.stop(engine)
        return result
    finally:
        if fakes is not None:
            await fakes.stop()
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                proc.kill()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def wait_for_replies(engine, customer_id, sent_at: dict[str, float]) -> dict[str, float]:
    """Seconds from each inbound post until the flow's reply to that peer was `done`."""
    latencies: dict[str, float] = {}
    deadline = time.monotonic() + 600
    while len(latencies) < len(sent_at) and time.monotonic() < deadline:
        rows = await Message.raw(
            "SELECT c.peer_target, m.tm_update FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id "
            "WHERE m.customer_id = {} AND m.direction = 'outgoing' AND m.status = 'done'",
            customer_id,
        )
        now_wall, now_perf = time.time(), time.perf_counter()
        for row in rows:
            peer = row["peer_target"]
            if peer in sent_at and peer not in latencies:
                done_perf = now_perf - (now_wall - row["tm_update"].timestamp())
                latencies[peer] = done_perf - sent_at[peer]
        await asyncio.sleep(0.2)
    if len(latencies) < len(sent_at):
        raise RuntimeError(f"only {len(latencies)} of {len(sent_at)} replies were done")
    return latencies


async def fill_conversations(dsn: str, customer_id, account_id, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    existing = await conn.fetchval("SELECT count(*) FROM conversations WHERE customer_id = $1", customer_id)
    records = [
        (
            uuid.uuid4(),
            customer_id,
            account_id,
            "message",
            f"SMS · +1999{i:07d}",
            "SMS conversation",
            "",
            uuid.UUID(int=0),
            "+15550009999",
            f"+1999{i:07d}",
            "{}",
            "{}",
        )
        for i in range(max(0, n - existing))
    ]
    await conn.copy_records_to_table(
        "conversations",
        records=records,
        columns=[
            "id",
            "customer_id",
            "account_id",
            "type",
            "name",
            "detail",
            "owner_type",
            "owner_id",
            "self_target",
            "peer_target",
            "self_address",
            "peer_address",
        ],
    )
    await conn.execute("ANALYZE conversations")
    await conn.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main()), indent=2))
