"""Secret hygiene (issue 14, item 13): a whole working day of one tenant, then every response body,
log record, webhook body, live event and Temporal history is searched for its secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid

import httpx
import pytest
from google.protobuf.message import Message as ProtoMessage
from temporalio.api.common.v1 import Payload

from hub import agents
from hub.tables import Agent, Customer
from tests.helpers import line_event, signed_line, signed_sms, sms_params, wait_for
from tests.integration.test_events import Stream
from tests.webhook_receiver import Receiver
from workflows.webhooks import RELAY_WORKFLOW_ID, shard_workflow_id

pytestmark = pytest.mark.usefixtures("dispatchers")


class Recorder:
    """Every response body the API answered, labelled by request, in order."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str]] = []

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        label = f"#{len(self.bodies)} {response.request.method} {response.request.url.path}"
        self.bodies.append((label, response.text))


def payload_texts(message: ProtoMessage) -> list[str]:
    """The decoded data of every Payload anywhere in a history event (inputs, results, failures,
    memos, search attributes, headers)."""
    found: list[str] = []
    if isinstance(message, Payload):
        found.append(message.data.decode("utf-8", "replace"))
        return found
    for field, value in message.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values()
        elif isinstance(value, ProtoMessage):
            items = [value]
        else:
            items = list(value)  # a repeated field
        for item in items:
            if isinstance(item, ProtoMessage):
                found += payload_texts(item)
    return found


async def histories(client, customer_id, shards: int) -> dict[str, list[str]]:
    """Each workflow of the customer, and the shared webhook ones, as its decoded payloads plus
    the raw serialized history (so nothing hides in a field the walk does not know)."""
    ids = [w.id async for w in client.list_workflows(f"CustomerId = '{customer_id}'")]
    ids += [RELAY_WORKFLOW_ID, *(shard_workflow_id(n) for n in range(shards))]
    texts: dict[str, list[str]] = {}
    for workflow_id in ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        texts[workflow_id] = [
            *(text for event in history.events for text in payload_texts(event)),
            b"".join(event.SerializeToString() for event in history.events).decode("utf-8", "replace"),
        ]
    return texts


async def test_no_secret_leaks_anywhere(client, settings, temporal_env, fake_sms, fake_line, caplog):
    caplog.set_level(logging.DEBUG)
    password = "pw-" + secrets.token_urlsafe(16)
    agent_password, agent_new_password = "pw-" + secrets.token_urlsafe(16), "pw-" + secrets.token_urlsafe(16)
    sms_token, line_secret, line_token = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(24)
    number = f"+1555{secrets.randbelow(10**7):07d}"
    customer, admin = await agents.bootstrap("hygiene", f"hygiene-{uuid.uuid4().hex[:8]}", password)
    receiver = await Receiver().start()
    recorder = Recorder()
    http = httpx.AsyncClient(base_url=client.base_url, timeout=30, event_hooks={"response": [recorder]})
    try:
        login = await http.post("/auth/login", json={"username": admin["username"], "password": password})
        token = login.json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        # Channel accounts with their credentials.
        sms = await http.post(
            "/v1.0/accounts",
            json={"type": "sms", "name": "sms", "number": number, "sid": "AC" + "1" * 32, "token": sms_token},
            headers=auth,
        )
        line = await http.post(
            "/v1.0/accounts",
            json={"type": "line", "name": "line", "secret": line_secret, "token": line_token},
            headers=auth,
        )
        assert sms.status_code == line.status_code == 200, (sms.text, line.text)
        sms_id, line_id = sms.json()["id"], line.json()["id"]
        # A flow on both accounts.
        flow = await http.post(
            "/v1.0/flows",
            json={
                "name": "hygiene",
                "actions": [
                    {"id": "note", "type": "variable_set", "option": {"name": "n", "value": "${message.id}"}},
                    {"id": "reply", "type": "conversation_send", "option": {"text": "Thanks, ${n}"}},
                ],
            },
            headers=auth,
        )
        assert flow.status_code == 200, flow.text
        for account_id in (sms_id, line_id):
            attached = await http.put(
                f"/v1.0/accounts/{account_id}", json={"message_flow_id": flow.json()["id"]}, headers=auth
            )
            assert attached.status_code == 200
        # The webhook, then a rotation: the only two answers allowed to show a webhook secret.
        configured = await http.put(
            "/v1.0/customer", json={"webhook_uri": receiver.url, "webhook_method": "POST"}, headers=auth
        )
        first_secret = configured.json()["webhook_secret"]
        first_label = recorder.bodies[-1][0]
        receiver.secrets.append(first_secret)
        rotated = await http.post("/v1.0/customer/webhook_secret/rotate", headers=auth)
        second_secret = rotated.json()["webhook_secret"]
        second_label = recorder.bodies[-1][0]
        receiver.secrets.append(second_secret)
        # Another agent, its password changed, a failed login, reads of everything.
        created = await http.post(
            "/v1.0/agents",
            json={"username": f"h-agent-{uuid.uuid4().hex[:8]}", "password": agent_password, "name": "a"},
            headers=auth,
        )
        agent = created.json()
        agent_login = await http.post(
            "/auth/login", json={"username": agent["username"], "password": agent_password}
        )
        changed = await http.post(
            "/auth/password",
            json={"old_password": agent_password, "new_password": agent_new_password},
            headers={"Authorization": f"Bearer {agent_login.json()['token']}"},
        )
        assert changed.status_code == 200, changed.text
        await http.post("/auth/login", json={"username": agent["username"], "password": agent_password})

        async with Stream(str(client.base_url), token) as stream:
            # Inbound on both channels, each starting the flow; an outbound send by the admin.
            path, body, headers = signed_sms(sms_id, sms_token, sms_params(to=number, body="order 1"))
            assert (await http.post(path, content=body, headers=headers)).status_code == 200
            event = line_event("message", "U" + "a" * 32, "hi")
            path, body, headers = signed_line(line_id, line_secret, [event])
            assert (await http.post(path, content=body, headers=headers)).status_code == 200
            conversations = (await http.get("/v1.0/conversations", headers=auth)).json()["result"]
            assert len(conversations) == 2
            for conversation in conversations:
                sent = await http.post(
                    f"/v1.0/conversations/{conversation['id']}/messages", json={"text": "hello"}, headers=auth
                )
                assert sent.status_code == 200, sent.text

            async def settled():
                runs = (await http.get("/v1.0/activeflows", headers=auth)).json()["result"]
                messages = [
                    m
                    for c in conversations
                    for m in (await http.get(f"/v1.0/conversations/{c['id']}/messages", headers=auth)).json()[
                        "result"
                    ]
                ]
                outgoing = [m for m in messages if m["direction"] == "outgoing"]
                return (
                    len(runs) == 2
                    and all(r["status"] == "ended" for r in runs)
                    and len(outgoing) == 4
                    and all(m["status"] == "done" for m in outgoing)
                )

            await wait_for(settled, within=60, interval=0.3)
            for run in (await http.get("/v1.0/activeflows", headers=auth)).json()["result"]:
                await http.get(f"/v1.0/activeflows/{run['id']}", headers=auth)
            await wait_for(lambda: asyncio.sleep(0, len(receiver.received) >= 10), within=60)
            await wait_for(lambda: asyncio.sleep(0, len(stream.events) >= 10), within=30)
            reads = ["/v1.0/accounts", f"/v1.0/accounts/{sms_id}", f"/v1.0/accounts/{line_id}"]
            reads += ["/v1.0/agents", f"/v1.0/agents/{agent['id']}", "/v1.0/customer"]
            reads += ["/v1.0/webhook_deliveries", "/v1.0/flows"]
            for path in reads:
                assert (await http.get(path, headers=auth)).status_code == 200
            streamed = json.dumps(stream.events)
    finally:
        await http.aclose()
        await receiver.stop()

    hashes = [r["password_hash"] for r in await Agent.select().where(Agent.customer_id == customer["id"])]
    stored = await Customer.select().where(Customer.id == customer["id"]).first()
    assert stored["webhook_secret"] and len(hashes) == 2
    forbidden = {
        "SMS auth token": sms_token,
        "LINE channel secret": line_secret,
        "LINE access token": line_token,
        "admin password": password,
        "agent password": agent_password,
        "agent new password": agent_new_password,
        **{f"password hash {i}": h for i, h in enumerate(hashes)},
        "first webhook secret": first_secret,
        "first webhook key": first_secret.removeprefix("whsec_"),
        "second webhook secret": second_secret,
        "second webhook key": second_secret.removeprefix("whsec_"),
        "JWT secret": settings.jwt_secret,
    }
    shown_once = {first_secret: first_label, second_secret: second_label}

    places: list[tuple[str, str]] = list(recorder.bodies)
    formatter = logging.Formatter()
    places += [(f"log {r.name} {r.levelname}", formatter.format(r) + repr(vars(r))) for r in caplog.records]
    places += [(f"webhook {r.webhook_id}", json.dumps(r.body)) for r in receiver.received]
    places.append(("event stream", streamed))
    recorded = await histories(temporal_env.client, customer["id"], settings.webhook_shards)
    for workflow_id, texts in recorded.items():
        places += [(f"history {workflow_id}", text) for text in texts]
    # The search looked where it should: payloads were decoded, logs were captured.
    flows = [texts[:-1] for workflow_id, texts in recorded.items() if workflow_id.startswith("activeflow-")]
    decoded = [text for texts in flows for text in texts]
    assert len(recorded) >= 4 + settings.webhook_shards and any(str(customer["id"]) in t for t in decoded)
    assert any(r.name.startswith(("hub", "api", "temporalio")) for r in caplog.records)

    hits = []
    for name, value in forbidden.items():
        allowed = {shown_once.get(value), shown_once.get(f"whsec_{value}")}
        hits += [f"{name} in {label}" for label, text in places if value in text and label not in allowed]
    assert hits == []
    # The two answers that show a secret show exactly their own.
    assert first_secret in dict(recorder.bodies)[first_label]
    assert second_secret in dict(recorder.bodies)[second_label]
