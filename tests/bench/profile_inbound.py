"""Profiles the inbound hot paths: `wrk` replaying pre-signed Twilio SMS posts against `hub serve`
on PostgreSQL, optionally under py-spy. Prints one JSON object of figures.

    .venv/bin/python -m tests.bench.profile_inbound assigned [--seconds 10] [--pyspy docs/x.svg]
    .venv/bin/python -m tests.bench.profile_inbound unassigned [--requests 300]
    .venv/bin/python -m tests.bench.profile_inbound idle [--requests 40]

`assigned`: inbound to conversations owned by an agent (stored + events, no flow);
`unassigned`: inbound starting a one-action `conversation_send` flow, until every reply is done;
`idle`: one message at a time, inbound post to reply `done` (p50).
`--workers N` sets HUB_HTTP_WORKERS (default: the hub's own default)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.bench.__main__ import (
    PG_ADMIN_DSN,
    REPO,
    cpu_seconds,
    percentile,
    pg_bare_insert,
    process_cpu_seconds,
    process_tree,
    temporal_bare,
    wait_http,
)
from tests.helpers import free_port, signed_sms, sms_params

ROOMS = 200

LUA = r"""
local lines = {}
local index, step = 0, 1
local counter = 1
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end
function init(args)
  for line in io.lines(REQS) do lines[#lines + 1] = line end
  index = tonumber(tid) - 1
  step = tonumber(NTHREADS)
end
function request()
  index = index + step
  if index > #lines then index = ((index - 1) % #lines) + 1 end
  local sig, body = lines[index]:match("^(%S+) (.*)$")
  return wrk.format("POST", PATH, {["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Twilio-Signature"] = sig}, body)
end
"""


def wrk_script(workdir: Path, path: str, requests: list[tuple[str, bytes]], threads: int) -> Path:
    reqs = workdir / "requests.txt"
    reqs.write_text("".join(f"{sig} {body.decode()}\n" for sig, body in requests))
    script = workdir / "inbound.lua"
    script.write_text(f'REQS = "{reqs}"\nPATH = "{path}"\nNTHREADS = {threads}\n' + LUA)
    return script


def parse_wrk(out: str) -> dict:
    def ms(text: str) -> float:
        value = float(re.match(r"[\d.]+", text).group())
        return (
            value / 1000
            if text.endswith("us")
            else value * 1000
            if text.endswith("s") and not text.endswith("ms")
            else value
        )

    figures = {"req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for q in ("50", "99"):
        found = re.search(rf"\s{q}%\s+(\S+)", out)
        if found:
            figures[f"p{q}_ms"] = round(ms(found.group(1)), 2)
    figures["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return figures


def run_wrk(base: str, script: Path, seconds: float, connections: int, threads: int) -> dict:
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            str(script),
            base,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(out)


async def main(args) -> dict:
    from temporalio.client import Client

    from api.embedded import temporal_binary
    from api.fakes import start_fakes
    from hub import accounts, agents, db, flows
    from hub.actions import ActionIn

    if shutil.which("wrk") is None:
        await asyncio.to_thread(subprocess.run, ["apt-get", "install", "-y", "wrk"], check=True)
    name = f"hub_prof_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = PG_ADMIN_DSN.rpartition("/")[0] + f"/{name}"
    procs: list[subprocess.Popen] = []
    fakes = None
    workdir = Path(tempfile.mkdtemp(prefix="hub-prof-"))
    try:
        t_port, api_port, sms_port, line_port = free_port(), free_port(), free_port(), free_port()
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
        engine = await db.open_engine(dsn)
        await db.migrate(engine)
        await db.start(engine, pool_size=4)
        fakes = await start_fakes(sms_port, line_port)
        base = f"http://127.0.0.1:{api_port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
            "HUB_DATABASE_URL": dsn,
            "HUB_TEMPORAL_ADDRESS": f"127.0.0.1:{t_port}",
            "HUB_HTTP_PORT": str(api_port),
            "HUB_PUBLIC_URL": base,
            "HUB_SMS_API_URL": f"http://127.0.0.1:{sms_port}",
            "HUB_LINE_API_URL": f"http://127.0.0.1:{line_port}",
            "HUB_JWT_SECRET": "bench-secret-0123456789-0123456789",
            "HUB_WORKER_METRICS_PORT": "0",
            "HUB_LOG_LEVEL": "WARNING",
        }
        if args.workers:
            env["HUB_HTTP_WORKERS"] = str(args.workers)
        env.update(item.split("=", 1) for item in args.env)
        client = None
        for _ in range(100):
            try:
                client = await Client.connect(env["HUB_TEMPORAL_ADDRESS"])
                break
            except Exception:
                await asyncio.sleep(0.2)
        api = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"], env=env, cwd=REPO, start_new_session=True
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "worker"], env=env, cwd=REPO, start_new_session=True
        )
        procs += [api, worker]
        await wait_http(f"{base}/healthz")

        customer = await agents.create_customer("prof")
        agent = await agents.create_agent(customer["id"], "prof-agent", "password-123", permission=0x20)
        flow = await flows.create_flow(
            customer["id"],
            "reply",
            "",
            [ActionIn(id="reply", type="conversation_send", option={"text": "ok ${message.text}"})],
        )
        token = "prof-auth-token"
        account = await accounts.create_account(
            customer["id"],
            {
                "type": "sms",
                "number": "+15550009999",
                "sid": "AC" + "1" * 32,
                "token": token,
                "message_flow_id": None if args.mode == "assigned" else flow["id"],
            },
        )

        def signed(sender: str, text: str) -> tuple[str, str, bytes, dict]:
            params = sms_params(sender=sender, to="+15550009999", body=text)
            path, body, headers = signed_sms(account["id"], token, params, public_url=base)
            return headers["X-Twilio-Signature"], path, body, headers

        result: dict = {"mode": args.mode, "workers": args.workers or "default"}
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            if args.mode == "assigned":
                senders = [f"+1650{i:07d}" for i in range(ROOMS)]
                for sender in senders:
                    _, path, body, headers = signed(sender, "open")
                    assert (await http.post(path, content=body, headers=headers)).status_code == 200
                conn = await asyncpg.connect(dsn)
                await conn.execute(
                    "UPDATE conversations SET owner_type = 'agent', owner_id = $1 WHERE customer_id = $2",
                    agent["id"],
                    customer["id"],
                )
                await conn.close()
                n = args.requests or 60000
                requests, path = [], ""
                for i in range(n):
                    sig, path, body, _ = signed(senders[i % ROOMS], f"a{i}")
                    requests.append((sig, body))
                script = wrk_script(workdir, path, requests, args.threads)
                # A short warm-up on other message ids, then the measured run.
                pyspy = None
                if args.pyspy:
                    pyspy = start_pyspy(
                        args.pyspy,
                        api.pid,
                        "--subprocesses",
                        "-d",
                        str(int(args.seconds)),
                        "-r",
                        "200",
                        # py-spy reads native stacks only by pausing the process.
                        *(["--native"] if args.native else ["--nonblocking"]),
                    )
                load_before = os.getloadavg()[0]
                conn = await asyncpg.connect(dsn)
                backends_sql = (
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()"
                )
                backends = {r["pid"] for r in await conn.fetch(backends_sql, name)}
                api_pids, worker_pids = process_tree(api.pid), process_tree(worker.pid)
                before = {pid: process_cpu_seconds(pid) for pid in {*api_pids, *worker_pids, *backends}}
                result.update(run_wrk(base, script, args.seconds, args.connections, args.threads))
                # A backend connected during the run counts from 0.
                backends |= {r["pid"] for r in await conn.fetch(backends_sql, name)}
                done = max(result["requests"], 1)
                if args.pg_backends:
                    # Which statements the database's CPU went to: each backend's ms per request.
                    info = await conn.fetch(
                        "SELECT pid, backend_type, left(query, 60) AS query FROM pg_stat_activity "
                        "WHERE datname = $1",
                        name,
                    )
                    per_request = [
                        (round((process_cpu_seconds(r["pid"]) - before.get(r["pid"], 0)) * 1000 / done, 3), r)
                        for r in info
                    ]
                    result["pg_backends"] = [
                        [ms, r["backend_type"], " ".join(r["query"].split())]
                        for ms, r in sorted(per_request, key=lambda item: -item[0])
                    ]
                await conn.close()
                # CPU per request: the API processes, the database's backends (the API's pool and
                # the worker's), and the worker (the outbox relay).
                for key, pids in (("api", api_pids), ("pg", backends), ("worker", worker_pids)):
                    spent = sum(process_cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids)
                    result[f"{key}_cpu_ms_per_req"] = round(spent * 1000 / done, 3)
                result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                if pyspy:
                    pyspy.wait()
                if result["requests"] > n:
                    result["warning"] = f"{result['requests'] - n} requests repeated a message id"
                result["pg_bare_insert_per_s"] = round(await pg_bare_insert(dsn), 1)
                result["ratio"] = round(result["req_per_s"] / result["pg_bare_insert_per_s"], 3)
            elif args.mode == "unassigned":
                n = args.requests
                requests, path = [], ""
                for i in range(n):
                    sig, path, body, _ = signed(f"+1415{i:07d}", f"u{i}")
                    requests.append((sig, body))
                script = wrk_script(workdir, path, requests, 1)
                # wrk runs until all n are stored (a few repeats at the end answer as duplicates).
                conn = await asyncpg.connect(dsn)
                pyspy = None
                if args.pyspy:
                    # On-CPU samples of the worker (workflow tasks and activities) over the burst.
                    pyspy = start_pyspy(
                        args.pyspy,
                        worker.pid,
                        "-r",
                        "100",
                        "--nonblocking",
                        "--gil",  # the thread running Python: CPU, not waits
                    )
                # What the idle hub costs per second (the relay and shards poll): subtracted below,
                # so a slower run (longer burst) does not look costlier per message.
                idle_cpu, idle_xacts = cpu_seconds(worker.pid), await _transactions(conn)
                idle_t = time.perf_counter()
                await asyncio.sleep(5)
                idle_s = time.perf_counter() - idle_t
                idle_cpu_per_s = (cpu_seconds(worker.pid) - idle_cpu) / idle_s
                idle_xacts_per_s = (await _transactions(conn) - idle_xacts) / idle_s
                cpu_before = {"api": cpu_seconds(api.pid), "worker": cpu_seconds(worker.pid)}
                threads_before = _threadcpu_seconds(worker.pid)
                xacts_before = await _transactions(conn)
                load_before = os.getloadavg()[0]
                started, started_wall = time.perf_counter(), time.time()
                load = subprocess.Popen(
                    ["wrk", "-t1", f"-c{args.connections}", "-d120s", "--latency", "-s", str(script), base],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                stored = 0
                while stored < n and time.perf_counter() - started < 120:
                    stored = await conn.fetchval(
                        "SELECT count(*) FROM messages WHERE customer_id = $1 AND direction = 'incoming'",
                        customer["id"],
                    )
                    await asyncio.sleep(0.02)
                result["inbound_stored_s"] = round(time.perf_counter() - started, 2)
                load.send_signal(2)  # wrk prints its figures on SIGINT
                figures = parse_wrk(load.communicate()[0])
                while True:
                    done = await conn.fetchval(
                        "SELECT count(*) FROM messages WHERE customer_id = $1 AND direction = 'outgoing' "
                        "AND status = 'done'",
                        customer["id"],
                    )
                    if done >= n or time.perf_counter() - started > 300:
                        break
                    await asyncio.sleep(0.05)
                last = await conn.fetchval(
                    "SELECT max(tm_update) FROM messages WHERE customer_id = $1 AND direction = 'outgoing'",
                    customer["id"],
                )
                elapsed = last.timestamp() - started_wall
                # CPU per run: robust to the machine's load, unlike the rate.
                for role, proc in (("api", api), ("worker", worker)):
                    used = cpu_seconds(proc.pid) - cpu_before[role]
                    result[f"{role}_cpu_ms_per_run"] = round(used * 1000 / n, 1)
                result["worker_threads_cpu_ms_per_run"] = {
                    name: round((cpu - threads_before.get(name, 0)) * 1000 / n, 1)
                    for name, cpu in _threadcpu_seconds(worker.pid).items()
                    if cpu - threads_before.get(name, 0) > 0.05
                }
                result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                # Transactions in this database (API, worker, relay and shards together): each
                # statement outside a transaction counts one.
                await asyncio.sleep(1.5)  # backends report their counts within a second
                burst_s = time.perf_counter() - started
                xacts = await _transactions(conn) - xacts_before
                result["db_transactions_per_run"] = round(xacts / n, 1)
                net = xacts - idle_xacts_per_s * burst_s
                result["db_transactions_per_run_net_of_idle"] = round(net / n, 1)
                result["worker_idle_cpu_ms_per_s"] = round(idle_cpu_per_s * 1000, 1)
                result["worker_cpu_ms_per_run_net_of_idle"] = round(
                    result["worker_cpu_ms_per_run"] - idle_cpu_per_s * burst_s * 1000 / n, 1
                )
                if pyspy:
                    pyspy.send_signal(2)
                    pyspy.wait(timeout=30)
                await conn.close()
                result.update(figures)
                result["replies_done"] = done
                result["inbound_unassigned_per_s"] = round(done / elapsed, 1)
                result["temporal_bare_per_s"] = round(await temporal_bare(client), 1)
                result["ratio"] = round(result["inbound_unassigned_per_s"] / result["temporal_bare_per_s"], 3)
            else:
                spies = []
                if args.pyspy:
                    # Wall-clock (--idle): where one message's latency goes, waits included.
                    for role, proc in (("api", api), ("worker", worker)):
                        out = args.pyspy.replace(".", f".{role}.", 1)
                        spies.append(start_pyspy(out, proc.pid, "--idle", "-r", "200", "--nonblocking"))
                conn = await asyncpg.connect(dsn)
                lat = []
                for i in range(args.requests):
                    sender = f"+1212{i:07d}"
                    _, path, body, headers = signed(sender, f"i{i}")
                    t0 = time.perf_counter()
                    assert (await http.post(path, content=body, headers=headers)).status_code == 200
                    posted = time.perf_counter() - t0
                    while True:
                        row = await conn.fetchrow(
                            "SELECT m.tm_update FROM messages m "
                            "JOIN conversations c ON c.id = m.conversation_id "
                            "WHERE c.peer_target = $1 AND m.direction = 'outgoing' AND m.status = 'done'",
                            sender,
                        )
                        if row:
                            break
                        await asyncio.sleep(0.002)
                    lat.append((time.perf_counter() - t0) * 1000)
                    result.setdefault("post_ms", []).append(round(posted * 1000, 1))
                    await asyncio.sleep(0.3)
                await conn.close()
                for spy in spies:
                    spy.send_signal(2)
                    spy.wait(timeout=30)
                post = result.pop("post_ms")
                result["idle_p50_ms"] = round(statistics.median(lat), 1)
                result["idle_p99_ms"] = round(percentile(lat, 0.99), 1)
                result["post_p50_ms"] = round(statistics.median(post), 1)
        result["api_rss_mb"] = _rss(api.pid)
        await db.stop(engine)
        return result
    finally:
        if fakes is not None:
            await fakes.stop()
        for proc in procs:
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                proc.kill()
        admin = await asyncpg.connect(PG_ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(workdir, ignore_errors=True)


def start_pyspy(out: str, pid: int, *options: str) -> subprocess.Popen:
    """py-spy recording `pid` into `out` (collapsed stacks for a .txt, else a flame graph)."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-o",
            out,
            "--format",
            "raw" if out.endswith(".txt") else "flamegraph",
            "--pid",
            str(pid),
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _transactions(conn) -> int:
    return await conn.fetchval(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
    )


def _threadcpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds of the process's threads, summed by thread name (Python's main thread, the
    workflow thread pool, the Temporal core's Rust threads...)."""
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = re.sub(r"[-_]?\d+$", "", stat[stat.index("(") + 1 : stat.rindex(")")])
        fields = stat.rsplit(")", 1)[1].split()
        totals[name] = totals.get(name, 0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return totals


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("assigned", "unassigned", "idle"))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--pyspy", default="")
    parser.add_argument("--native", action="store_true", help="py-spy records native (C, Cython) frames too")
    parser.add_argument("--pg-backends", action="store_true", help="CPU per request of each database backend")
    parser.add_argument("--env", action="append", default=[], help="HUB_X=value for serve and worker")
    parsed = parser.parse_args()
    if parsed.mode == "unassigned" and not parsed.requests:
        parsed.requests = 300
    if parsed.mode == "idle" and not parsed.requests:
        parsed.requests = 30
    print(json.dumps(asyncio.run(main(parsed)), indent=2))
