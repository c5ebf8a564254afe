"""Security and input hardening (issue 14, items 4-9 and 12): SSRF forms of IPv6, flow URLs
checked when saved and pinned when called, capped flow answers, flow size, stop permission,
NUL characters, strict types, ASCII phone numbers, errors that are bugs rather than outages."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.flows import FlowActivities
from activities.inputs import FlowHttpInput
from activities.messages import MessageActivities
from activities.webhook_http import WebhookSender
from api import errors as api_errors
from api import temporal as hub_temporal
from api.fakes import start_server
from hub import agents, flows, netguard, webhooks
from hub.addresses import normalize_tel
from hub.dispatch import QueuedDelivery
from hub.errors import BadRequest
from hub.tables import Activeflow, Agent, Contact, Message
from hub.webhooks import Endpoint
from tests.helpers import (
    free_port,
    line_event,
    make_line_account,
    make_tenant,
    open_conversation,
    serving,
    signed_line,
    signed_sms,
    sms_params,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]

# --- item 4: IPv6 forms that embed an IPv4 address ---------------------------------------------

# (address, public?): every form the guard must see through, and public look-alikes it must keep.
IPV6_FORMS = [
    ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
    ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
    ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
    ("64:ff9b:1::a00:1", False),  # local-use NAT64 (RFC 8215): never public
    ("2002:a9fe:a9fe::1", False),  # 6to4 of 169.254.169.254
    ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
    ("::a9fe:a9fe", False),  # IPv4-compatible
    ("::127.0.0.1", False),
    ("::ffff:0:a9fe:a9fe", False),  # IPv4-translated
    ("::ffff:0:a00:1", False),
    ("::ffff:169.254.169.254", False),  # IPv4-mapped
    ("::ffff:127.0.0.1", False),
    ("fec0::1", False),  # site-local
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("::1", False),
    ("::", False),
    ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
    ("2002:808:808::1", True),  # 6to4 of 8.8.8.8
    ("::ffff:8.8.8.8", True),
    ("::ffff:0:808:808", True),
    ("2606:4700:4700::1111", True),
]
REFUSED_FORMS = [address for address, public in IPV6_FORMS if not public]


@pytest.mark.parametrize(("address", "public"), IPV6_FORMS)
def test_the_guard_judges_the_ipv4_inside_ipv6_forms(address, public):
    assert netguard.is_public(ipaddress.ip_address(address)) is public


async def test_every_refused_form_is_refused_for_webhook_targets_and_flow_targets(settings, pg):
    """One table over all forms, for the places the hub calls customer-given URLs: webhook
    endpoints (when configured and when connecting) and flow actions (when saved and when run)."""
    customer = await agents.create_customer("ssrf")
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    flow_http = FlowActivities(httpx.AsyncClient(), guarded, MessageActivities(httpx.AsyncClient(), guarded))
    sender = WebhookSender(allow_private=False, timeout_s=2)
    delivery = QueuedDelivery(
        id=uuid.uuid4(),
        customer_id=customer["id"],
        event_id=uuid.uuid4(),
        event_seq=1,
        event_type="conversation_updated",
        order_key=uuid.uuid4(),
        attempts=0,
        next_attempt_at=None,
        data="{}",
    )
    try:
        for address in REFUSED_FORMS:
            url = f"http://[{address}]:9/x"
            with pytest.raises(BadRequest, match="refused"):
                await webhooks.configure(customer["id"], {"webhook_uri": url}, allow_private=False)
            attempt = await sender.send(Endpoint(url, "POST", ("whsec_" + "A" * 32,)), delivery)
            assert not attempt.ok and attempt.error.startswith("target refused"), (address, attempt)
            action = {"id": "call", "type": "fetch", "option": {"url": url, "into": "x"}}
            with pytest.raises(BadRequest, match="'call' \\(fetch\\): url refused"):
                await flows.create_flow(customer["id"], "f", "", [flows.ActionIn(**action)])
            with pytest.raises(ApplicationError, match="target refused"):
                await ActivityEnvironment().run(flow_http.http_call, FlowHttpInput(url=url))
        # Public look-alikes stay accepted where that needs no connection (saving a flow).
        for address, public in IPV6_FORMS:
            if public:
                action = {"id": "ok", "type": "fetch", "option": {"url": f"http://[{address}]/", "into": "x"}}
                await flows.create_flow(customer["id"], "f", "", [flows.ActionIn(**action)])
    finally:
        await sender.aclose()


# --- item 5: flow URLs checked when saved, pinned when called -----------------------------------

PRIVATE_FLOW_URLS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://[::1]/",
    "http://0/",
    "http://127.0.0.1:8080/x",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f.1/",  # hex and a short form
    "http://0177.0.0.1/",  # octal
    "http://localhost/",
    "https://[::ffff:10.0.0.1]/",
]


@pytest.fixture
async def guarded_api(settings, pg_engine, pg):
    """The API as production runs it: private targets not allowed."""
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    async with serving(guarded, restore_engine=pg_engine) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def _http_action(kind: str, url: str, action_id: str = "call") -> dict:
    if kind == "fetch":
        return {"id": action_id, "type": "fetch", "option": {"url": url, "into": "answer"}}
    return {"id": action_id, "type": "webhook_send", "option": {"url": url, "body": {"a": 1}}}


@pytest.mark.parametrize("url", PRIVATE_FLOW_URLS)
async def test_flow_with_a_private_target_is_refused_when_saved(guarded_api, url):
    tenant = await make_tenant()
    headers = tenant.admin.headers
    for kind in ("fetch", "webhook_send"):
        actions = [{"id": "hi", "type": "variable_set", "option": {"name": "a", "value": "1"}}]
        actions.append(_http_action(kind, url))
        response = await guarded_api.post(
            "/v1.0/flows", json={"name": "ssrf", "actions": actions}, headers=headers
        )
        assert response.status_code == 400, (kind, url, response.text)
        assert f"action 'call' ({kind}): url refused" in response.json()["error"]["message"]
    safe = await guarded_api.post(
        "/v1.0/flows",
        json={"name": "ok", "actions": [_http_action("fetch", "https://example.com/")]},
        headers=headers,
    )
    assert safe.status_code == 200, safe.text
    put = await guarded_api.put(
        f"/v1.0/flows/{safe.json()['id']}",
        json={"actions": [_http_action("webhook_send", url)]},
        headers=headers,
    )
    assert put.status_code == 400 and "url refused" in put.json()["error"]["message"]
    # Only run time can tell where a substituted host goes; such URLs are checked there.
    templated = [
        _http_action("fetch", "http://${host}/x"),
        _http_action("fetch", "http://a${b}.example/", "c2"),
    ]
    later = await guarded_api.post("/v1.0/flows", json={"name": "t", "actions": templated}, headers=headers)
    assert later.status_code == 200, later.text


async def test_the_allow_private_setting_lets_private_flow_targets_be_saved(client):
    tenant = await make_tenant()  # the suite's API allows private targets (receivers on 127.0.0.1)
    response = await client.post(
        "/v1.0/flows",
        json={"name": "local", "actions": [_http_action("fetch", "http://127.0.0.1:9/")]},
        headers=tenant.admin.headers,
    )
    assert response.status_code == 200, response.text


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


async def test_hub_flows_apply_refuses_private_targets_nul_and_oversized_flows(settings, tmp_path, pg):
    tenant = await make_tenant()
    env = {**os.environ, "HUB_DATABASE_URL": settings.database_url, "HUB_WEBHOOK_ALLOW_PRIVATE": "false"}
    path = tmp_path / "flow.json"
    args = ["flows", "apply", str(path), "--customer", str(tenant.customer_id)]
    cases = [
        (
            {"name": "ssrf", "actions": [_http_action("webhook_send", "http://169.254.169.254/")]},
            "url refused",
        ),
        (
            {
                "name": "nul",
                "actions": [{"id": "s", "type": "conversation_send", "option": {"text": "a\x00b"}}],
            },
            "NUL",
        ),
        ({"name": "big", "actions": [_big_action(i) for i in range(60)]}, "at most 262144"),
    ]
    for spec, expected in cases:
        path.write_text(json.dumps(spec))
        result = await asyncio.to_thread(_cli, args, env)
        assert result.returncode != 0 and expected in result.stderr, (spec["name"], result.stderr)
    assert await flows.find_flow(tenant.customer_id, None, "ssrf") is None


class CountingResolver:
    """Stands in for DNS: `rebind.test` resolves to the local receiver, and every lookup counts."""

    def __init__(self, monkeypatch) -> None:
        self.lookups = 0
        real = socket.getaddrinfo

        def getaddrinfo(host, *args, **kwargs):
            if host == "rebind.test":
                self.lookups += 1
                host = "127.0.0.1"
            return real(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture
async def answers():
    """An HTTP server answering with bodies of a given size."""

    @get("/size/{n:int}")
    async def sized(n: FromPath[int]) -> dict:
        return {"pad": "x" * n}

    port = free_port()
    server, task = await start_server(Litestar([sized]), "127.0.0.1", port)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_flow_http_connects_to_the_address_it_checked(settings, pg, monkeypatch, answers):
    """One lookup per call, made by the connector that then connects to exactly that answer: no
    second resolution a DNS rebinding could answer differently after the check."""
    resolver = CountingResolver(monkeypatch)
    port = answers.rsplit(":", 1)[1]
    activities = FlowActivities(
        httpx.AsyncClient(), settings, MessageActivities(httpx.AsyncClient(), settings)
    )
    result = await ActivityEnvironment().run(
        activities.http_call, FlowHttpInput(url=f"http://rebind.test:{port}/size/3", answer_prefix="a")
    )
    assert result.status_code == 200 and result.variables["a.pad"] == "xxx"
    assert resolver.lookups == 1
    # With private targets refused, the answer the connector got is judged before connecting.
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    strict = FlowActivities(httpx.AsyncClient(), guarded, MessageActivities(httpx.AsyncClient(), guarded))
    with pytest.raises(ApplicationError, match="target refused: host 'rebind.test' resolves to 127.0.0.1"):
        await ActivityEnvironment().run(
            strict.http_call, FlowHttpInput(url=f"http://rebind.test:{port}/size/3")
        )


async def test_substituted_flow_urls_are_checked_at_run_time(settings, pg):
    guarded = dataclasses.replace(settings, webhook_allow_private=False)
    activities = FlowActivities(httpx.AsyncClient(), guarded, MessageActivities(httpx.AsyncClient(), guarded))
    # What `http://${host}/` became: a value holding `${` must not skip the check either.
    for url in ("http://2130706433:9/", "http://${x}@127.0.0.1:9/", "http://0x7f.1:9/"):
        with pytest.raises(ApplicationError, match="target refused"):
            await ActivityEnvironment().run(activities.http_call, FlowHttpInput(url=url))


# --- item 6: flow HTTP answers are capped --------------------------------------------------------


async def test_flow_http_answers_over_the_cap_fail_the_action(settings, pg, answers):
    small = dataclasses.replace(settings, flow_http_max_answer_bytes=1000)
    activities = FlowActivities(httpx.AsyncClient(), small, MessageActivities(httpx.AsyncClient(), small))
    ok = await ActivityEnvironment().run(
        activities.http_call, FlowHttpInput(url=f"http://{answers}/size/900", answer_prefix="a")
    )
    assert len(ok.variables["a.pad"]) == 900
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.http_call, FlowHttpInput(url=f"http://{answers}/size/2000", answer_prefix="a")
        )
    assert refused.value.type == "AnswerTooLarge" and refused.value.non_retryable
    assert "larger than 1000 bytes" in str(refused.value)


@pytest.mark.usefixtures("worker")
async def test_a_run_whose_fetch_answer_is_too_large_fails_with_the_reason(client, answers):
    tenant = await make_tenant()
    actions = [
        {"id": "look", "type": "fetch", "option": {"url": f"http://{answers}/size/300000", "into": "big"}},
        {"id": "after", "type": "conversation_send", "option": {"text": "not reached"}},
    ]
    flow = await client.post(
        "/v1.0/flows", json={"name": "big", "actions": actions}, headers=tenant.admin.headers
    )
    assert flow.status_code == 200, flow.text
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )
    await open_conversation(client, tenant)

    async def finished():
        row = await Activeflow.select().where(Activeflow.customer_id == tenant.customer_id).first()
        return row if row and row["status"] != "running" else None

    run = await wait_for(finished, within=30)
    assert run["status"] == "failed", run
    assert run["reason"].startswith("action look:") and "larger than 262144 bytes" in run["reason"]


# --- item 7: flow size -----------------------------------------------------------------------------


def _big_action(i: int) -> dict:
    return {"id": f"say{i}", "type": "conversation_send", "option": {"text": "y" * 5000}}


async def test_flows_over_the_size_limit_are_refused(client):
    tenant = await make_tenant()
    h = tenant.admin.headers
    big = {"name": "big", "actions": [_big_action(i) for i in range(60)]}  # ~300 KB encoded
    response = await client.post("/v1.0/flows", json=big, headers=h)
    assert response.status_code == 400, response.text
    assert "at most 262144" in response.json()["error"]["message"]
    fits = await client.post("/v1.0/flows", json={"name": "fits", "actions": big["actions"][:40]}, headers=h)
    assert fits.status_code == 200, fits.text
    grown = await client.put(f"/v1.0/flows/{fits.json()['id']}", json={"actions": big["actions"]}, headers=h)
    assert grown.status_code == 400
    stored = await client.get(f"/v1.0/flows/{fits.json()['id']}", headers=h)
    assert len(stored.json()["actions"]) == 40


# --- item 8: stopping an activeflow ---------------------------------------------------------------


async def test_only_admins_and_managers_stop_activeflows(client):
    tenant = await make_tenant()
    conversation_id = await open_conversation(client, tenant)
    row = Activeflow(
        id=uuid.uuid4(),
        customer_id=tenant.customer_id,
        flow_id=uuid.uuid4(),
        conversation_id=conversation_id,
        account_id=tenant.account["id"],
        workflow_id=f"activeflow-{uuid.uuid4()}",
        status="running",
    )
    await Activeflow.insert(row)
    for member in (tenant.agent, tenant.other_agent):
        refused = await client.post(f"/v1.0/activeflows/{row.id}/stop", headers=member.headers)
        assert refused.status_code == 403, refused.text
    assert (await Activeflow.select().where(Activeflow.id == row.id).first())["status"] == "running"
    stopped = await client.post(f"/v1.0/activeflows/{row.id}/stop", headers=tenant.manager.headers)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"


# --- item 9: input strictness --------------------------------------------------------------------


async def test_nul_characters_are_400_everywhere_and_nothing_is_stored(client, guarded_api):
    tenant = await make_tenant()
    h = tenant.admin.headers
    conversation_id = await open_conversation(client, tenant)
    nul = "a\x00b"
    requests = [
        ("POST", "/v1.0/contacts", {"name": nul}),
        ("POST", "/v1.0/contacts", {"addresses": [{"type": "line", "target": nul}]}),
        (
            "POST",
            "/v1.0/agents",
            {"username": f"u{uuid.uuid4().hex[:6]}", "password": "password-1", "name": nul},
        ),
        ("PUT", f"/v1.0/agents/{tenant.agent.id}", {"detail": nul}),
        ("POST", f"/v1.0/conversations/{conversation_id}/messages", {"text": nul}),
        ("PUT", f"/v1.0/conversations/{conversation_id}", {"name": nul}),
        (
            "POST",
            "/v1.0/flows",
            {"name": "n", "actions": [{"id": "s", "type": "conversation_send", "option": {"text": nul}}]},
        ),
        (
            "POST",
            "/v1.0/flows",
            {
                "name": "n",
                "actions": [
                    {
                        "id": "s",
                        "type": "webhook_send",
                        "option": {"url": "https://example.com/", "body": {nul: 1}},
                    }
                ],
            },
        ),
        ("PUT", "/v1.0/customer", {"name": nul}),
        ("GET", "/v1.0/activeflows?status=a%00b", None),
    ]
    for method, path, body in requests:
        response = await client.request(method, path, json=body, headers=h)
        assert response.status_code == 400, (method, path, response.text)
        assert "NUL" in response.json()["error"]["message"]
    escaped = await client.post("/v1.0/contacts", json={"name": "\\u0000 is fine as text"}, headers=h)
    assert escaped.status_code == 200
    assert await Contact.count().where(Contact.customer_id == tenant.customer_id) == 1
    assert (
        await Message.count().where(
            Message.customer_id == tenant.customer_id, Message.direction == "outgoing"
        )
        == 0
    )
    # Provider hooks: a NUL in a signed SMS or LINE message is refused alike on every engine.
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params(body=nul))
    assert (await client.post(path, content=body, headers=headers)).status_code == 400
    account, secret = await make_line_account(tenant.customer_id)
    path, body, headers = signed_line(account["id"], secret, [line_event("message", "Unul", nul)])
    assert (await client.post(path, content=body, headers=headers)).status_code == 400
    assert await Message.count().where(Message.customer_id == tenant.customer_id) == 1


async def test_nul_characters_are_refused_on_sqlite_too(sqlite_engine, pg_engine, settings):
    """SQLite would store them: the edge refuses them before any engine sees them."""
    sqlite_settings = dataclasses.replace(settings, database_url=f"sqlite:///{sqlite_engine.path}")
    async with (
        serving(sqlite_settings, restore_engine=pg_engine) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        customer = await agents.create_customer("nul-sqlite")
        admin = await agents.create_agent(
            customer["id"], f"nul-{uuid.uuid4().hex[:6]}", "password-123", permission=0x20
        )
        login = await http.post(
            "/auth/login", json={"username": admin["username"], "password": "password-123"}
        )
        h = {"Authorization": f"Bearer {login.json()['token']}"}
        response = await http.post("/v1.0/contacts", json={"name": "a\x00b"}, headers=h)
        assert response.status_code == 400 and "NUL" in response.json()["error"]["message"]
        assert await Contact.count().where(Contact.customer_id == customer["id"]) == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1.0/agents", {"username": "strict-a", "password": "password-1", "permission": 32.0}),
        ("/v1.0/agents", {"username": "strict-b", "password": "password-1", "permission": "32"}),
        ("/v1.0/agents", {"username": "strict-c", "password": "password-1", "permission": 1}),
        ("/v1.0/agents", {"username": "strict-d", "password": "password-1", "permission": 33}),
        ("/v1.0/agents", {"username": "strict-e", "password": "password-1", "permission": True}),
        ("/v1.0/contacts", {"name": 5}),
        (
            "/v1.0/flows",
            {"name": "s", "actions": [{"id": "z", "type": "sleep", "option": {"duration_ms": 10.0}}]},
        ),
        (
            "/v1.0/flows",
            {"name": "s", "actions": [{"id": "z", "type": "sleep", "option": {"duration_ms": "10"}}]},
        ),
        (
            "/v1.0/flows",
            {
                "name": "s",
                "actions": [
                    {
                        "id": "w",
                        "type": "webhook_send",
                        "option": {"url": "https://example.com/", "wait_response": "true"},
                    }
                ],
            },
        ),
    ],
)
async def test_loosely_typed_bodies_are_400(client, path, body):
    tenant = await make_tenant()
    response = await client.post(path, json=body, headers=tenant.admin.headers)
    assert response.status_code == 400, response.text
    assert await Agent.count().where(Agent.username.like("strict-%")) == 0


async def test_every_permission_value_of_the_enum_is_accepted(client):
    tenant = await make_tenant()
    for permission in (0, 32, 64, 96):
        body = {
            "username": f"perm-{permission}-{uuid.uuid4().hex[:6]}",
            "password": "password-1",
            "permission": permission,
        }
        response = await client.post("/v1.0/agents", json=body, headers=tenant.admin.headers)
        assert response.status_code == 200 and response.json()["permission"] == permission


UNICODE_DIGITS = "+1\u0664\u0661\u0665\u0665\u0665\u0665\u0661\u0662\u0663\u0664"  # +1 ٤١٥٥٥٥١٢٣٤
FULLWIDTH = "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff11\uff12\uff13\uff14"


async def test_phone_numbers_take_ascii_digits_only(client):
    assert normalize_tel(UNICODE_DIGITS) == "" and normalize_tel(FULLWIDTH) == ""
    assert normalize_tel("+14155551234") == "+14155551234"
    tenant = await make_tenant()
    h = tenant.admin.headers
    for number in (UNICODE_DIGITS, "+1555000\u0661\u0662\u0663"):
        account = await client.post("/v1.0/accounts", json={"type": "sms", "number": number}, headers=h)
        assert account.status_code == 400, account.text
        contact = await client.post(
            "/v1.0/contacts", json={"addresses": [{"type": "tel", "target": number}]}, headers=h
        )
        assert contact.status_code == 400, contact.text
    # Inbound: a signed post whose From uses other digits stores nothing.
    path, body, headers = signed_sms(
        tenant.account["id"], tenant.auth_token, sms_params(sender=UNICODE_DIGITS)
    )
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 400 and "ASCII digits" in response.json()["error"]["message"]
    assert await Message.count().where(Message.customer_id == tenant.customer_id) == 0


# --- item 12: bugs are not outages --------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (OSError(111, "Connect call failed ('127.0.0.1', 5432)"), True),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed"), True),
        (TimeoutError(), True),
        (sqlite3.OperationalError("database is locked"), True),
        (sqlite3.OperationalError("unable to open database file"), True),
        (sqlite3.OperationalError("no such table: conversations"), False),
        (sqlite3.OperationalError("no such column: foo"), False),
        (FileNotFoundError(2, "No such file or directory"), False),
        (PermissionError(13, "Permission denied"), False),
        (RPCError("down", RPCStatusCode.UNAVAILABLE, b""), True),
        (RPCError("bad", RPCStatusCode.INVALID_ARGUMENT, b""), False),
        (RuntimeError("Failed client connect: Server connection error"), True),
        (RuntimeError("a bug"), False),
    ],
)
def test_only_real_unavailability_counts_as_an_outage(exc, unavailable):
    assert api_errors.is_unavailable(exc) is unavailable


def test_an_outage_is_503_and_a_bug_500_both_logged_with_their_traceback():
    from litestar.testing import RequestFactory

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("hub.api")
    logger.addHandler(handler)
    request = RequestFactory().get("/v1.0/conversations")
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as exc:
            outage = api_errors.handle_unexpected(request, exc)
        try:
            raise sqlite3.OperationalError("no such table: conversations")
        except sqlite3.OperationalError as exc:
            bug = api_errors.handle_unexpected(request, exc)
    finally:
        logger.removeHandler(handler)
    assert outage.status_code == 503 and bug.status_code == 500
    [warning, error] = records
    assert warning.levelno == logging.WARNING and warning.exc_info
    assert "database is locked" in warning.getMessage()
    assert error.levelno == logging.ERROR and error.exc_info
    assert "no such table" in str(error.exc_info[1])


@pytest.mark.usefixtures("worker")
async def test_a_bug_in_a_workflow_start_is_500_not_retry(client, monkeypatch):
    tenant = await make_tenant()
    flow = await client.post(
        "/v1.0/flows",
        json={"name": "f", "actions": [{"id": "s", "type": "conversation_send", "option": {"text": "hi"}}]},
        headers=tenant.admin.headers,
    )
    await client.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )

    async def buggy(*args, **kwargs):
        raise TypeError("a bug in the start")

    monkeypatch.setattr(hub_temporal, "start_activeflow", buggy)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params())
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 500, response.text

    async def down(*args, **kwargs):
        raise RPCError("injected: Temporal unreachable", RPCStatusCode.UNAVAILABLE, b"")

    monkeypatch.setattr(hub_temporal, "start_activeflow", down)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, sms_params())
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"]
