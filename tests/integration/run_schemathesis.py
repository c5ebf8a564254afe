"""The OpenAPI document is the API (issue 14, item 10): schemathesis generates requests from
`/schema` (valid and invalid ones), runs every check on the answers, and must find nothing.

NOT YET IN THE SUITE (the file name keeps pytest from collecting it): it takes ~6 minutes on
the shared 2-core machine, far over the suite's budget. Run it by hand with
`.venv/bin/python -m pytest tests/integration/run_schemathesis.py`. Operations that validate
beyond what a JSON schema can say are listed, with the reason, in tests/schemathesis.toml. Its
last run (seed 14, 2,433 cases) found 2 defects, both fixed since: an error message echoed a NUL
character of an unknown query key, and a taken username (409) on POST /v1.0/agents.

The API under test has a database of its own and a task queue no worker polls: generated data
(webhook URLs, flows, messages) is stored and answered but never acted upon, so no generated URL
is ever called. Excluded, and why:
- GET /v1.0/events: a Server-Sent Events stream never ends, a generated request would hang.
The provider hooks are included: without a valid provider signature they answer 401 (or 404)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from pathlib import Path

import httpx

from hub import db
from tests.conftest import PG_ADMIN_DSN
from tests.helpers import fresh_pg_database, make_tenant, serving

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
# Operations whose answer depends on the caller's permission: run again as a plain agent.
PERMISSION_SENSITIVE = (
    r"^/v1\.0/(agents|accounts|flows|customer|conversations|service_agents|conversation_messages"
    r"|activeflows|webhook_deliveries)"
)


async def schemathesis(base_url: str, token: str, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/schema/openapi.json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {token}",
        "--exclude-path",
        "/v1.0/events",
        "--seed",
        "14",
        "--workers",
        "2",
        "--request-timeout",
        "20",
        "--no-color",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode, out.decode(errors="replace")


async def test_schemathesis_finds_no_failure(settings, pg_engine):
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
        )
        async with serving(isolated, restore_engine=pg_engine) as base_url:
            async with httpx.AsyncClient(base_url=base_url) as http:
                assert (await http.get("/v1.0/agents", headers=tenant.admin.headers)).status_code == 200
            code, admin_out = await schemathesis(base_url, tenant.admin.token, "--max-examples", "10")
            assert code == 0, admin_out[-20000:]
            code, agent_out = await schemathesis(
                base_url,
                tenant.agent.token,
                "--max-examples",
                "5",
                "--include-path-regex",
                PERMISSION_SENSITIVE,
            )
            assert code == 0, agent_out[-20000:]
