"""Measures the two candidate mechanisms for inactivity close (issue 15, item 2) on this machine:

- timer: one Temporal workflow per open conversation, signal-with-start on every message, a
  durable timer that closes the conversation when no message came for `inactivity_close_s`;
- sweep: one scheduled sweep that closes, in batches, the open conversations whose
  `tm_last_message` is older than the customer's setting, through a partial index.

`python -m tests.bench.inactivity` (PostgreSQL on 127.0.0.1:5432) prints one JSON object.
BENCH_TIMER_N conversations get a timer workflow (default 2,000; the per-conversation cost is
extrapolated to 100,000 and said so); the sweep runs over BENCH_SWEEP_N rows (default 100,000)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta

import asyncpg
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.embedded import temporal_binary
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database

TIMER_N = int(os.environ.get("BENCH_TIMER_N", "2000"))
SWEEP_N = int(os.environ.get("BENCH_SWEEP_N", "100000"))
TARGET = 100_000
closed: dict[str, float] = {}


def log(message: str) -> None:
    print(f"[inactivity {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@activity.defn
async def close_conversation(conversation_id: str) -> None:
    closed[conversation_id] = time.monotonic()


@workflow.defn
class InactivityTimer:
    def __init__(self) -> None:
        self.touched = False

    @workflow.signal
    def touch(self) -> None:
        self.touched = True

    @workflow.run
    async def run(self, conversation_id: str, timeout_s: float) -> None:
        while True:
            self.touched = False
            try:
                await workflow.wait_condition(lambda: self.touched, timeout=timedelta(seconds=timeout_s))
            except TimeoutError:
                await workflow.execute_activity(
                    close_conversation, conversation_id, start_to_close_timeout=timedelta(seconds=30)
                )
                return


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (the dev server runs as one process)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def server_pid() -> int:
    """The dev server this process started (a child running `temporal server start-dev`)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if parent == os.getpid() and b"start-dev" in cmd:
            return int(pid)
    raise RuntimeError("no Temporal dev server among this process's children")


async def bounded(n: int, concurrency: int, make) -> float:
    """Runs make(i) for i < n, `concurrency` at a time; returns operations per second."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await make(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - started)


async def measure_timer() -> dict:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(), dev_server_log_level="error"
    )
    try:
        client: Client = env.client
        pid = server_pid()
        worker = Worker(
            client,
            task_queue="inactivity",
            workflows=[InactivityTimer],
            activities=[close_conversation],
            workflow_runner=UnsandboxedWorkflowRunner(),
            max_cached_workflows=TIMER_N + 100,
        )
        async with worker:
            await asyncio.sleep(1)
            base_rss = rss_mib(pid)
            ids = [f"inactivity-{uuid.uuid4()}" for _ in range(TIMER_N)]

            async def first_message(i: int) -> None:
                await client.start_workflow(
                    InactivityTimer.run,
                    args=[ids[i], 3600.0],
                    id=ids[i],
                    task_queue="inactivity",
                    start_signal="touch",
                )

            log(f"timer: signal-with-start of {TIMER_N} conversations")
            start_rate = await bounded(TIMER_N, 50, first_message)
            await asyncio.sleep(2)
            server_rss = rss_mib(pid) - base_rss

            async def next_message(i: int) -> None:
                await client.get_workflow_handle(ids[i]).signal(InactivityTimer.touch)

            signal_rate = await bounded(TIMER_N, 50, next_message)
            latencies = []
            for i in range(50):
                t = time.perf_counter()
                await client.get_workflow_handle(ids[i]).signal(InactivityTimer.touch)
                latencies.append((time.perf_counter() - t) * 1000)

            # Close lag: 200 timers of 2 s each.
            lag_ids = [f"lag-{uuid.uuid4()}" for _ in range(200)]
            due: dict[str, float] = {}

            async def short(i: int) -> None:
                await client.start_workflow(
                    InactivityTimer.run, args=[lag_ids[i], 2.0], id=lag_ids[i], task_queue="inactivity"
                )
                due[lag_ids[i]] = time.monotonic() + 2.0

            await bounded(200, 50, short)
            deadline = time.monotonic() + 60
            while len([i for i in lag_ids if i in closed]) < 200 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            lags = sorted((closed[i] - due[i]) * 1000 for i in lag_ids if i in closed)
        return {
            "timer_conversations": TIMER_N,
            "timer_signal_with_start_per_s": round(start_rate, 1),
            "timer_signal_per_s": round(signal_rate, 1),
            "timer_signal_p50_ms": round(statistics.median(latencies), 1),
            "timer_server_rss_mib": round(server_rss, 1),
            "timer_server_rss_mib_per_100k_extrapolated": round(server_rss * TARGET / TIMER_N, 0),
            "timer_close_lag_p50_ms": round(lags[len(lags) // 2], 1) if lags else None,
            "timer_close_lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1], 1) if lags else None,
            "timer_closed_of_200": len(lags),
        }
    finally:
        await env.shutdown()


SWEEP_SQL = """
UPDATE conv SET status = 'closed', tm_closed = now()
WHERE id = ANY(ARRAY(
    SELECT id FROM conv
    WHERE customer_id = $1 AND status = 'open' AND tm_last_message < now() - make_interval(secs => $2)
    ORDER BY tm_last_message LIMIT 500 FOR UPDATE SKIP LOCKED
)) AND status = 'open'
RETURNING id
"""


async def measure_sweep() -> dict:
    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE conv (id uuid PRIMARY KEY, customer_id uuid NOT NULL, status text NOT NULL, "
                "tm_last_message timestamptz NOT NULL, tm_closed timestamptz)"
            )
            customer = uuid.uuid4()
            log(f"sweep: loading {SWEEP_N} open conversations")
            # Every message of the last 2 days; 1,000 of them are more than a day old (due).
            await conn.execute(
                "INSERT INTO conv SELECT gen_random_uuid(), $1, 'open', "
                "now() - make_interval(secs => (g % 86000)) FROM generate_series(1, $2) g",
                customer,
                SWEEP_N - 1000,
            )
            await conn.execute(
                "INSERT INTO conv SELECT gen_random_uuid(), $1, 'open', now() - interval '2 days' "
                "FROM generate_series(1, 1000)",
                customer,
            )
            await conn.execute(
                "CREATE INDEX conv_open_by_last ON conv (customer_id, tm_last_message) WHERE status = 'open'"
            )
            await conn.execute("ANALYZE conv")
            plan = await conn.fetch("EXPLAIN " + SWEEP_SQL, customer, 86400.0)
            t = time.perf_counter()
            first = await conn.fetch(SWEEP_SQL, customer, 86400.0)
            first_ms = (time.perf_counter() - t) * 1000
            second = await conn.fetch(SWEEP_SQL, customer, 86400.0)
            idle = []
            for _ in range(20):
                t = time.perf_counter()
                nothing = await conn.fetch(SWEEP_SQL, customer, 86400.0)
                idle.append((time.perf_counter() - t) * 1000)
            # The per-message cost: keeping tm_last_message current (needed by the inbox fields anyway).
            t = time.perf_counter()
            ids = await conn.fetch("SELECT id FROM conv WHERE status = 'open' LIMIT 1000")
            for row in ids:
                await conn.execute("UPDATE conv SET tm_last_message = now() WHERE id = $1", row["id"])
            touch_ms = (time.perf_counter() - t) * 1000 / len(ids)
        finally:
            await conn.close()
    return {
        "sweep_conversations": SWEEP_N,
        "sweep_batch_500_ms": round(first_ms, 1),
        "sweep_closed_first_two_batches": len(first) + len(second),
        "sweep_nothing_due_p50_ms": round(statistics.median(idle), 2),
        "sweep_nothing_due_closed": len(nothing),
        "sweep_touch_per_message_ms": round(touch_ms, 3),
        "sweep_plan": [r[0] for r in plan],
    }


async def main() -> None:
    parts = os.environ.get("BENCH_INACTIVITY_PARTS", "sweep,timer").split(",")
    figures = {}
    if "sweep" in parts:
        figures.update(await measure_sweep())
    if "timer" in parts:
        figures.update(await measure_timer())
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
