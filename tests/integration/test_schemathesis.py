"""The OpenAPI document is the API (issue 14, item 10): schemathesis generates requests from the
live `/schema` (valid and invalid ones, every operation, new ones included), runs every check on
the answers, and must find nothing: no 500, no undocumented status, no answer off its schema, no
schema-valid request refused beyond the rules listed in tests/schemathesis.toml.

Two runs: a plain agent's token first (every operation; the permission checks answer 403 or
the agent's own view), then an admin's (more examples, every phase). The API under test has a
database of its own and a task queue no worker polls: generated data (webhook URLs, flows,
messages) is stored and answered but never acted upon, so no generated URL is ever called.

Schemathesis runs as its CLI in a subprocess: the API is served in this test's event loop, which
schemathesis' blocking requests (its Python API) would stall. Its output is not sanitized, so a
failure's curl line (in the assertion message) reproduces the request exactly; the tokens are of
a throwaway tenant signed with the suite's test secret."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import re
import secrets
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from api import temporal as hub_temporal
from api.worker import build_dry_run_worker
from hub import db, dispatch
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import Tenant, fresh_pg_database, make_tenant, open_conversation, serving

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
TESTS = Path(__file__).resolve().parents[1]
CONFIG = TESTS / "schemathesis.toml"
HOOKS = TESTS / "schemathesis_hooks.py"
SEED = os.environ.get("HUB_SCHEMATHESIS_SEED", "14")
# (who, examples per operation and phase, phases): tuned to ~1 minute on an idle 2-core machine.
RUNS = [
    ("agent", "4", "fuzzing"),
    ("admin", "8", "examples,coverage,fuzzing,stateful"),
]


def list_rule(schema: dict) -> str:
    """Every list may answer 400 for a page token it did not issue (opaque to a JSON schema)."""
    names = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if any(p.get("name") == "page_token" for p in operation.get("parameters", []))
    ]
    assert names, "no list operation found in the schema"
    regex = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    statuses = '["2xx", "400", "401", "403", "404", "409", "429"]'
    return (
        "\n[[operations]]\n# lists: `page_token` must be a next_page_token the API issued.\n"
        f"include-name-regex = '''{regex}'''\n"
        f"checks.positive_data_acceptance.expected-statuses = {statuses}\n"
    )


async def seed(http: httpx.AsyncClient, tenant: Tenant) -> dict[str, list[str]]:
    """Objects of every kind, made through the API, so generated requests reach real ones too."""
    admin = tenant.admin.headers

    async def made(method: str, path: str, body: dict | None = None) -> dict:
        answer = await http.request(method, path, json=body, headers=admin)
        assert answer.status_code == 200, answer.text
        return answer.json()

    contact = await made("POST", "/v1.0/contacts", {"addresses": [{"type": "tel", "target": "+14155550100"}]})
    actions = [
        {"id": "hello", "type": "conversation_send", "option": {"text": "hello"}, "next_id": "wait"},
        {"id": "wait", "type": "sleep", "option": {"duration_ms": 3_600_000}},
    ]
    flow = await made("POST", "/v1.0/flows", {"name": "seed", "actions": actions})
    account_id = str(tenant.account["id"])
    await made("PUT", f"/v1.0/accounts/{account_id}", {"message_flow_id": flow["id"]})
    # The endpoint first: whichever relay takes the events below (this call, or the session's
    # in-process worker, which works on whatever database the tables are bound to) queues their
    # deliveries for it.
    await made("PUT", "/v1.0/customer", {"webhook_uri": "https://192.0.0.9/never-sent"})
    # Signed inbound messages: two conversations, each with a message and an activeflow.
    conversations = [str(await open_conversation(http, tenant)) for _ in range(2)]
    await made("PUT", f"/v1.0/conversations/{conversations[1]}", {"owner_id": str(tenant.agent.id)})
    messages = [
        m["id"]
        for c in conversations
        for m in (await made("GET", f"/v1.0/conversations/{c}/messages"))["result"]
    ]
    activeflows = [a["id"] for a in (await made("GET", "/v1.0/activeflows"))["result"]]
    assert len(messages) == len(activeflows) == 2, (messages, activeflows)
    # Webhook deliveries of those events, as a worker's relay queues them (none sends them here).
    await dispatch.relay_batch(100)
    deliveries = [d["id"] for d in (await made("GET", "/v1.0/webhook_deliveries"))["result"]]
    assert deliveries
    agents = [str(m.id) for m in (tenant.admin, tenant.manager, tenant.agent, tenant.other_agent)]
    return {
        "account_id": [account_id],
        "contact_id": [contact["id"]],
        "flow_id": [flow["id"]],
        "conversation_id": conversations,
        "message_id": messages,
        "activeflow_id": activeflows,
        "delivery_id": deliveries[:3],
        "agent_id": agents,
        "owner_id": agents,
        # The outbox holds the events of the seeding: resuming from its start answers at once.
        "header.Last-Event-ID": ["0"],
    }


def _word(key: str) -> str:
    return re.sub(r"[^a-z0-9_]", "_", key.lower())


def seed_rule(seeded: dict[str, list[str]]) -> str:
    """Parameters of these names take a seeded id half of the time (a generated one otherwise)."""
    lines = ["", "[parameters]"]
    lines += [f'"{key}" = {{ dictionary = "{_word(key)}", probability = 0.5 }}' for key in seeded]
    for key, values in seeded.items():
        lines += ["", f"[dictionaries.{_word(key)}]", f"values = {json.dumps(values)}"]
    return "\n".join(lines) + "\n"


def line_of(output: str, marker: str, after: int = 0) -> int:
    """Where the line holding `marker` starts, or -1."""
    found = output.find(marker, after)
    return output.rfind("\n", 0, found) + 1 if found >= 0 else -1


def findings(output: str) -> str:
    """The failures and errors sections (each failure with a curl line reproducing it)."""
    start = min(
        (m.start() for m in re.finditer(r"^=+ (FAILURES|ERRORS) =+$", output, re.MULTILINE)),
        default=max(0, len(output) - 8000),
    )
    end, summary = line_of(output, "=== WARNINGS ===", start), line_of(output, "=== SUMMARY ===")
    return output[start : end if end > 0 else None][:20000] + "\n" + output[max(summary, 0) :]


async def schemathesis(base_url: str, config: Path, token: str, examples: str, phases: str, cwd: Path):
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"{base_url}/schema/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        examples,
        "--phases",
        phases,
        "--seed",
        SEED,
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--output-sanitize",
        "false",
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
    )
    out, _ = await process.communicate()
    return process.returncode, out.decode(errors="replace")


async def test_schemathesis_finds_no_failure(settings, pg_engine, tmp_path):
    async with fresh_pg_database(PG_ADMIN_DSN) as url:
        engine = await db.open_engine(url)
        await db.migrate(engine)
        await db.start(engine)
        try:
            tenant = await make_tenant()
        finally:
            await db.stop(engine)
            db.use_engine(pg_engine)
        isolated = dataclasses.replace(
            settings,
            database_url=url,
            temporal_task_queue=f"unpolled-{uuid.uuid4().hex[:6]}",
            webhook_allow_private=False,
            temporal_codec_key="k1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        tokens = {"admin": tenant.admin.token, "agent": tenant.agent.token}
        # Dry runs run for real: their worker has no activities, so nothing generated is acted upon.
        dry_runs = build_dry_run_worker(await hub_temporal.connect(isolated), isolated)
        async with serving(isolated, restore_engine=pg_engine) as base_url, dry_runs:
            async with httpx.AsyncClient(base_url=base_url) as http:
                schema = (await http.get("/schema/openapi.json")).json()
                config = tmp_path / "schemathesis.toml"
                seeded = await seed(http, tenant)
                config.write_text(CONFIG.read_text() + list_rule(schema) + seed_rule(seeded))
                for who, examples, phases in RUNS:
                    code, output = await schemathesis(
                        base_url, config, tokens[who], examples, phases, tmp_path
                    )
                    cases = re.search(r"(\d+) generated", output)
                    # Shown with `pytest -s`: the warnings, the phases, the cases run.
                    print(f"schemathesis as {who}:\n{output[max(line_of(output, '=== WARNINGS'), 0) :]}")
                    assert code == 0 and cases, f"schemathesis as {who}:\n{findings(output)}"
                # The run could not lock itself out: what it tested, it tested as an admin.
                answer = await http.get("/v1.0/agents", headers=tenant.admin.headers)
                assert answer.status_code == 200, answer.text
