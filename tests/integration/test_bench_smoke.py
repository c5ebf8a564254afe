"""`make bench` itself, with tiny numbers, so the bench does not rot: it runs to the end, prints one
JSON object with every field of contract section 6, and the figures are plausible (not their size:
speed belongs to the bench, not to tests)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "BENCH_INBOUND_N": "6",
    "BENCH_IDLE_N": "2",
    "BENCH_ASSIGNED_N": "40",
    "BENCH_ASSIGNED_ROOMS": "5",
    "BENCH_BARE_N": "5",
    "BENCH_PG_N": "100",
    "BENCH_WEBHOOK_N": "30",
    "BENCH_CONVERSATIONS_N": "3000",
    "BENCH_LIST_SAMPLES": "5",
}
FIELDS = [
    "inbound_unassigned_per_s",
    "inbound_unassigned_p50_ms",
    "inbound_unassigned_p99_ms",
    "inbound_unassigned_idle_p50_ms",
    "inbound_assigned_per_s",
    "inbound_assigned_p50_ms",
    "inbound_assigned_p99_ms",
    "temporal_bare_per_s",
    "pg_bare_insert_per_s",
    "webhook_delivered_per_s",
    "http_bare_post_per_s",
    "list_conversations_p99_ms",
    "api_peak_rss_mb",
    "worker_peak_rss_mb",
]
FILTERS = ["none", "owner_id", "status=open", "status=closed", "tag (1 %)", "account_id", "type=line", "peer"]


@pytest.mark.slow
def test_bench_runs_with_tiny_numbers_and_prints_every_field():
    env = {**os.environ, **TINY}
    answer = subprocess.run(
        [sys.executable, "-m", "tests.bench"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    result = json.loads(answer.stdout)
    for field in FIELDS:
        assert result[field] > 0, field
    assert result["inbound_unassigned_idle_p50_ms"] > 0
    assert set(FILTERS) <= set(result["list_conversations_p99_ms_by_filter"])
    assert result["conversations_in_db"] >= 3000
    # Every webhook the hub delivered and every bare post was verified by the receiver.
    assert result["webhooks_verified"] >= 2 * 30
    assert result["load_generator"]["tool"].startswith("wrk")
    assert all(isinstance(t["met"], bool) for t in result["targets"].values())
    assert len(result["targets"]) == 5
    assert "[bench" in answer.stderr


async def test_wrk_replay_sends_every_request_exactly_once():
    """wrk calls thread 0's request() once before the run to check it: the replay must not lose
    that request, nor send any twice, and counts only the real ones."""
    from tests.bench.wrk import ensure_wrk, replay
    from tests.webhook_receiver import Receiver

    seen: list[str] = []

    class Counting(Receiver):
        async def _app(self, scope, receive, send):
            while (await receive()).get("more_body"):
                pass
            seen.append(scope["path"])
            status = 404 if "filler" in scope["path"] else (500 if scope["path"] == "/r/7" else 200)
            await self._answer(send, status)

    server = await Counting().start()
    try:
        requests = [("POST", f"/r/{i}", "c2ln+/=", b"a=1&b=%2B2") for i in range(300)]
        # A lost request would keep its thread running: wrk then ends at -d and replay raises.
        run = await asyncio.to_thread(
            replay, ensure_wrk(), f"http://127.0.0.1:{server.port}", requests, 2, 8, within_s=20
        )
    finally:
        await server.stop()
    real = [p for p in seen if "filler" not in p]
    assert sorted(real) == sorted(f"/r/{i}" for i in range(300))
    assert (run.ok, run.bad) == (299, 1)
    assert run.seconds > 0
