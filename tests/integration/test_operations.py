"""Operations, seen from outside a production-shaped deployment: `hub serve` and `hub worker` as
processes of their own (own database, own Temporal dev server, payload encryption on).

One scenario (an inbound SMS that starts a flow that replies, and the webhook deliveries it causes)
is checked three ways: the metrics of both processes moved by the right amounts, every log line is
a JSON object without message text or secrets, and Temporal's history is encrypted but decodes
through the API's codec endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api import temporal
from api.embedded import temporal_binary
from tests.conftest import PG_ADMIN_DSN, _database_dsn
from tests.helpers import free_port, signed_sms, sms_params, wait_for
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

HUB = str(Path(sys.executable).parent / "hub")
JWT_SECRET = "ops-test-" + secrets.token_hex(24)
PHONE = "+14155550" + str(100 + secrets.randbelow(800))
TEXT = "my order number is " + secrets.token_hex(6)
HOOK_ROUTE = "/v1.0/hooks/accounts/{account_id}"


@dataclass
class Stack:
    url: str
    worker_metrics: str
    env: dict[str, str]
    temporal: Client
    logs: list[Path]
    secrets: list[str]
    admin: dict[str, str]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _http_up(url: str, within: float = 60) -> None:
    async def up() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(url)).status_code == 200
        except httpx.TransportError:
            return False

    await wait_for(up, within=within, interval=0.2)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory, fakes):
    tmp = tmp_path_factory.mktemp("ops")
    name = f"hub_ops_{uuid.uuid4().hex[:10]}"
    admin_conn = await asyncpg.connect(PG_ADMIN_DSN)
    await admin_conn.execute(f'CREATE DATABASE "{name}"')
    await admin_conn.close()
    env_server = await WorkflowEnvironment.start_local(
        namespace="default",
        search_attributes=temporal.SEARCH_ATTRIBUTES,
        dev_server_existing_path=temporal_binary(),
        dev_server_log_level="error",
    )
    api_port, metrics_port = free_port(), free_port()
    codec_keys = f"k2:{key()},k1:{key()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HUB_")},
        "HUB_DATA_DIR": str(tmp / "data"),
        "HUB_DATABASE_URL": _database_dsn(name),
        "HUB_REDIS_URL": "redis://127.0.0.1:6379/0",
        "HUB_TEMPORAL_ADDRESS": env_server.client.service_client.config.target_host,
        "HUB_TEMPORAL_TASK_QUEUE": "hub-ops",
        "HUB_HTTP_PORT": str(api_port),
        "HUB_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "HUB_WORKER_METRICS_PORT": str(metrics_port),
        "HUB_JWT_SECRET": JWT_SECRET,
        "HUB_TEMPORAL_CODEC_KEY": codec_keys,
        "HUB_SMS_API_URL": f"http://127.0.0.1:{fakes.servers[0].config.port}",
        "HUB_LINE_API_URL": f"http://127.0.0.1:{fakes.servers[1].config.port}",
        "HUB_WEBHOOK_ALLOW_PRIVATE": "true",
        "HUB_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.4",
        "HUB_WEBHOOK_POLL_INTERVAL_S": "0.05",
        # Nothing here is left unstarted on purpose: recovery only runs its first round.
        "HUB_RECOVERY_INTERVAL_S": "3600",
    }
    password = "ops-" + secrets.token_hex(8)
    username = f"ops-{uuid.uuid4().hex[:8]}"
    boot = await asyncio.create_subprocess_exec(
        HUB, "bootstrap", "--customer", "ops", "--username", username, "--password", password,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(boot.communicate(), 120)
    assert boot.returncode == 0, err.decode()
    admin = json.loads(out.decode().strip().splitlines()[-1])
    logs = [tmp / "serve.log", tmp / "worker.log"]
    running = Stack(
        url=f"http://127.0.0.1:{api_port}",
        worker_metrics=f"http://127.0.0.1:{metrics_port}/metrics",
        env=env,
        temporal=env_server.client,
        logs=logs,
        # Every one of these must stay out of the logs.
        secrets=[JWT_SECRET, password, admin["token"], *(p.split(":")[1] for p in codec_keys.split(","))],
        admin=admin,
    )
    for command, log_file in zip(("serve", "worker"), logs, strict=True):
        with open(log_file, "wb") as out:  # noqa: ASYNC230 - opened once, handed to the child
            running.processes.append(
                await asyncio.create_subprocess_exec(HUB, command, env=env, stdout=out, stderr=out)
            )
    try:
        await _http_up(f"{running.url}/readyz")
        await _http_up(running.worker_metrics)
        yield running
    finally:
        for proc in running.processes:
            proc.send_signal(signal.SIGINT)
        for proc in running.processes:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await env_server.shutdown()
        admin_conn = await asyncpg.connect(PG_ADMIN_DSN)
        await admin_conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin_conn.close()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scrape: dict, name: str, **labels: str) -> float:
    """The sum of the series of `name` having (at least) these labels."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in scrape.items() if n == name and wanted <= have)


@dataclass
class Scenario:
    before_api: dict
    before_worker: dict
    after_api: dict
    after_worker: dict
    message_id: str
    request_id: str
    auth_token: str
    delivered: int


@pytest.fixture(scope="module")
async def scenario(stack: Stack, fakes) -> Scenario:
    auth_token = secrets.token_hex(16)
    stack.secrets.append(auth_token)
    receiver = await Receiver().start()
    admin = {"Authorization": f"Bearer {stack.admin['token']}"}
    try:
        async with httpx.AsyncClient(base_url=stack.url, headers=admin, timeout=30) as http:
            flow = await http.post(
                "/v1.0/flows",
                json={
                    "name": "ops reply",
                    "actions": [{"id": "reply", "type": "conversation_send", "option": {"text": "Got it"}}],
                },
            )
            assert flow.status_code in (200, 201), flow.text
            number = "+1555000" + str(1000 + secrets.randbelow(8000))
            account = await http.post(
                "/v1.0/accounts",
                json={
                    "type": "sms",
                    "name": "ops line",
                    "number": number,
                    "sid": "AC" + "0" * 32,
                    "token": auth_token,
                    "message_flow_id": flow.json()["id"],
                },
            )
            assert account.status_code in (200, 201), account.text
            endpoint = {"webhook_uri": receiver.url, "webhook_method": "POST"}
            hook = await http.put("/v1.0/customer", json=endpoint)
            assert hook.status_code == 200, hook.text
            receiver.secrets.append(hook.json()["webhook_secret"])
            stack.secrets.append(hook.json()["webhook_secret"])

            before_api = samples((await http.get("/metrics")).text)
            before_worker = samples((await http.get(stack.worker_metrics)).text)

            params = sms_params(sender=PHONE, to=number, body=TEXT)
            path, body, headers = signed_sms(account.json()["id"], auth_token, params, public_url=stack.url)
            request_id = "ops-" + uuid.uuid4().hex
            inbound = await http.post(path, content=body, headers={**headers, "X-Request-ID": request_id})
            assert inbound.status_code == 200, inbound.text
            assert inbound.headers["X-Request-ID"] == request_id

            async def replied():
                return [r for r in fakes.sms.received if r["to"] == PHONE]

            await wait_for(replied, within=60)

            async def conversation_messages():
                listing = (await http.get("/v1.0/conversations")).json()["result"]
                if not listing:
                    return None
                messages = (await http.get(f"/v1.0/conversations/{listing[0]['id']}/messages")).json()
                statuses = {m["direction"]: m["status"] for m in messages["result"]}
                return messages["result"] if statuses.get("outgoing") == "done" else None

            messages = await wait_for(conversation_messages, within=60)
            [incoming] = [m for m in messages if m["direction"] == "incoming"]

            async def settled():
                listing = await http.get("/v1.0/webhook_deliveries", params={"page_size": 100})
                rows = listing.json()["result"]
                done = all(r["status"] == "delivered" for r in rows)
                if rows and done and len(receiver.received) == len(rows):
                    return rows
                return None

            delivered = await wait_for(settled, within=60)
            await asyncio.sleep(0.5)  # a late event (the message's `done`) would show as a new row
            delivered = await wait_for(settled, within=60)

            after_api = samples((await http.get("/metrics")).text)
            after_worker = samples((await http.get(stack.worker_metrics)).text)
    finally:
        await receiver.stop()
    return Scenario(
        before_api,
        before_worker,
        after_api,
        after_worker,
        message_id=incoming["id"],
        request_id=inbound.headers["X-Request-ID"],
        auth_token=auth_token,
        delivered=len(delivered),
    )


def delta(scenario: Scenario, side: str, name: str, **labels: str) -> float:
    before = getattr(scenario, f"before_{side}")
    after = getattr(scenario, f"after_{side}")
    return value(after, name, **labels) - value(before, name, **labels)


async def test_metrics_of_api_and_worker_count_the_scenario(scenario: Scenario):
    # The API took one inbound SMS, stored it and started its flow.
    assert delta(scenario, "api", "hub_inbound_messages_total", channel="sms", outcome="stored") == 1
    assert delta(scenario, "api", "hub_inbound_messages_total") == 1
    assert delta(scenario, "api", "hub_inbound_messages_total", channel="sms", outcome="duplicate") == 0
    assert delta(scenario, "api", "hub_activeflow_starts_total", outcome="started") == 1
    hook_requests = delta(
        scenario,
        "api",
        "hub_http_request_duration_seconds_count",
        method="POST",
        route=HOOK_ROUTE,
        status="200",
    )
    assert hook_requests >= 1  # the inbound SMS, and the provider's status callback if it came yet
    # Latency is labelled by route template: no raw path (an account id) appears in any label.
    label_values = [v for _, labels in scenario.after_api for _, v in labels]
    assert not any("hooks/accounts/" in v and "{" not in v for v in label_values)
    # The worker sent the flow's reply, ended the run and delivered every webhook once.
    assert delta(scenario, "worker", "hub_outbound_messages_total", channel="sms", outcome="done") == 1
    assert delta(scenario, "worker", "hub_activeflow_ends_total", status="ended") == 1
    assert delta(scenario, "worker", "hub_webhook_attempts_total", outcome="delivered") == scenario.delivered
    assert delta(scenario, "worker", "hub_webhook_attempts_total", outcome="failed") == 0
    assert scenario.delivered >= 5  # created, message created + received, reply created + updated
    # The Temporal SDK's own metrics come with the worker's, on the same port.
    completed = delta(
        scenario,
        "worker",
        "temporal_workflow_completed_total",
        workflow_type="Activeflow",
        task_queue="hub-ops",
    )
    assert completed == 1


def _events_bytes(history) -> bytes:
    return b"".join(event.SerializeToString() for event in history.events)


async def test_temporal_history_is_encrypted_and_decodes_through_the_codec_endpoint(
    stack: Stack, scenario: Scenario
):
    raw = await Client.connect(stack.env["HUB_TEMPORAL_ADDRESS"])  # no codec: what Temporal stores
    histories = {}
    async for execution in raw.list_workflows():
        handle = raw.get_workflow_handle(execution.id, run_id=execution.run_id)
        histories[execution.id] = await handle.fetch_history()
    flow_id = f"activeflow-{scenario.message_id}"
    assert flow_id in histories, list(histories)
    for workflow_id, history in histories.items():
        stored = _events_bytes(history)
        assert TEXT.encode() not in stored and PHONE.encode() not in stored, workflow_id
    started = next(
        e
        for e in histories[flow_id].events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    )
    encrypted = started.workflow_execution_started_event_attributes.input
    assert encrypted.payloads[0].metadata["encoding"] == b"binary/encrypted"
    assert encrypted.payloads[0].metadata["encryption-key-id"] == b"k2"  # the first key encrypts
    # The input holds ids only; the text and the number reach the run as the result of its
    # `flow_load` local activity, recorded (encrypted) in a marker.
    markers = [
        e.marker_recorded_event_attributes.details["result"]
        for e in histories[flow_id].events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and "result" in e.marker_recorded_event_attributes.details
    ]
    assert markers and all(m.payloads[0].metadata["encoding"] == b"binary/encrypted" for m in markers)

    ui_origin = "http://localhost:8233"
    async with httpx.AsyncClient(base_url=stack.url, timeout=10) as http:
        admin = {"Authorization": f"Bearer {stack.admin['token']}", "Content-Type": "application/json"}
        body = plain = None
        for marker in markers:
            candidate = json_format.MessageToJson(marker)
            decoded = await http.post(
                "/codec/decode", content=candidate, headers={**admin, "Origin": ui_origin}
            )
            assert decoded.status_code == 200, decoded.text
            assert decoded.headers["access-control-allow-origin"] == ui_origin
            payloads = json_format.Parse(decoded.text, Payloads())
            assert payloads.payloads[0].metadata["encoding"] == b"json/plain"
            if TEXT.encode() in payloads.payloads[0].data:
                body, plain = candidate, payloads
                break
        assert plain is not None, "no flow_load marker decodes to the message text"
        assert PHONE.encode() in plain.payloads[0].data

        # The UI cannot send a header: the endpoint URL may carry the token instead.
        by_path = await http.post(f"/codec/{stack.admin['token']}/decode", content=body)
        assert by_path.status_code == 200 and json_format.Parse(by_path.text, Payloads()) == plain
        # Encoding gives something that decodes back to the same payload.
        again = await http.post("/codec/encode", content=decoded.text, headers=admin)
        assert again.status_code == 200 and TEXT not in again.text
        round_trip = await http.post("/codec/decode", content=again.text, headers=admin)
        assert json_format.Parse(round_trip.text, Payloads()) == plain

        preflight = await http.options(
            "/codec/decode",
            headers={"Origin": ui_origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code in (200, 204)
        assert "x-namespace" in preflight.headers["access-control-allow-headers"]
        elsewhere = await http.post("/codec/decode", content=body, headers={**admin, "Origin": "http://evil.test"})
        assert "access-control-allow-origin" not in elsewhere.headers

        anonymous = await http.post("/codec/decode", content=body)
        assert anonymous.status_code == 401 and anonymous.json()["error"]["reason"] == "unauthorized"
        agent = await http.post(
            "/v1.0/agents",
            json={"username": f"plain-{uuid.uuid4().hex[:8]}", "password": "password-123", "permission": 0},
            headers=admin,
        )
        assert agent.status_code in (200, 201), agent.text
        login = await http.post(
            "/auth/login", json={"username": agent.json()["username"], "password": "password-123"}
        )
        plain_agent = {"Authorization": f"Bearer {login.json()['token']}"}
        forbidden = await http.post("/codec/decode", content=body, headers=plain_agent)
        assert forbidden.status_code == 403, forbidden.text
        bad = await http.post("/codec/decode", content=b"{not json", headers=admin)
        assert bad.status_code == 400 and bad.json()["error"]["reason"] == "bad_request"

    # Temporal's own CLI, a codec-server client, shows the history decoded through the endpoint.
    shown = await asyncio.create_subprocess_exec(
        temporal_binary(), "workflow", "show", "-w", flow_id, "-o", "json",
        "--address", stack.env["HUB_TEMPORAL_ADDRESS"],
        "--codec-endpoint", f"{stack.url}/codec", "--codec-auth", f"Bearer {stack.admin['token']}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(shown.communicate(), 60)
    assert shown.returncode == 0, err.decode()
    [first] = [e for e in json.loads(out)["events"] if "workflowExecutionStartedEventAttributes" in e]
    [shown_input] = first["workflowExecutionStartedEventAttributes"]["input"]["payloads"]
    assert base64.b64decode(shown_input["metadata"]["encoding"]) == b"json/plain", shown_input
    shown_data = json.loads(base64.b64decode(shown_input["data"]))
    assert shown_data["activeflow_id"] and TEXT not in json.dumps(shown_data)  # ids only, decoded


def _lines(stack: Stack) -> list[dict]:
    parsed = []
    for path in stack.logs:
        for raw in path.read_text().splitlines():
            if raw.strip():
                try:
                    parsed.append(json.loads(raw))
                except ValueError:
                    pytest.fail(f"{path.name}: not a JSON line: {raw!r}")
    return parsed


async def test_logs_are_json_lines_with_ids_and_no_text_or_secrets(stack: Stack, scenario: Scenario):
    # Last in this module: the lines of the codec test (a token in a URL path) are checked too.
    lines = _lines(stack)
    assert len(lines) > 10
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    # The inbound request: one request line and the inbound line, both with the request id the
    # API answered with (the same one its error envelopes carry).
    mine = [line for line in lines if line.get("request_id") == scenario.request_id]
    [request] = [line for line in mine if line["logger"] == "hub.http"]
    assert request["route"] == HOOK_ROUTE and request["status"] == 200 and request["outcome"] == "ok"
    assert isinstance(request["duration_ms"], float)
    [stored] = [line for line in mine if line["logger"] == "hub.hooks"]
    assert stored["message_id"] == scenario.message_id
    assert stored["customer_id"] == stack.admin["customer_id"]
    assert stored["conversation_id"] and stored["outcome"] == "stored"
    # Never message text or the phone number at info level, never a secret at any level.
    for line in lines:
        text = json.dumps(line)
        if line["level"] in ("DEBUG", "INFO"):
            assert TEXT not in text and PHONE not in text, line
        for secret in stack.secrets:
            assert secret not in text, line
