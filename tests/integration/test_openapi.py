"""The OpenAPI document describes the error envelope the API really answers with."""

from __future__ import annotations

import dataclasses
import re
import uuid

import httpx
import msgspec

from api.openapi import ErrorEnvelope
from api.schemas import DIALABLE_PATTERN
from hub.actions import OPTION_TYPES
from tests.helpers import make_tenant, open_conversation, serving


async def test_every_error_response_is_documented_as_the_envelope(client):
    schema = (await client.get("/schema/openapi.json")).json()
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    checked = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
            assert "400" in errors and "503" in errors, (method, path)
            for code, response in errors.items():
                assert response["content"]["application/json"]["schema"] == envelope, (method, path, code)
                checked += 1
            if path.startswith("/v1.0/") and "/hooks/" not in path:
                assert {"401", "403"} <= set(errors), (method, path)
    assert checked > 100
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == [
        "status",
        "reason",
        "message",
        "request_id",
    ]


async def test_real_errors_match_the_documented_envelope(client):
    tenant = await make_tenant()
    answers = [
        await client.post("/v1.0/flows", content=b"{", headers=tenant.admin.headers),
        await client.get("/v1.0/conversations"),
        await client.post("/v1.0/flows", json={"actions": []}, headers=tenant.agent.headers),
        await client.get(f"/v1.0/flows/{tenant.customer_id}", headers=tenant.admin.headers),
    ]
    assert [a.status_code for a in answers] == [400, 401, 403, 404]
    for answer in answers:
        envelope = msgspec.convert(answer.json(), ErrorEnvelope)
        assert envelope.error.status == answer.status_code and envelope.error.request_id


async def test_documented_statuses_enums_and_patterns_match_the_api(client):
    schema = (await client.get("/schema/openapi.json")).json()
    paths, components = schema["paths"], schema["components"]["schemas"]
    for method, path, code in [
        ("post", "/auth/login", "401"),
        ("post", "/auth/login", "429"),
        ("post", "/v1.0/agents", "409"),
        ("post", "/v1.0/activeflows/{activeflow_id}/stop", "409"),
        ("get", "/v1.0/activeflows", "404"),
        ("post", "/v1.0/conversations/{conversation_id}/messages", "409"),
    ]:
        assert code in paths[path][method]["responses"], (method, path, code)
    assert components["AgentCreate"]["properties"]["permission"]["enum"] == [0, 32, 64, 96]
    assert components["AgentOut"]["properties"]["permission"]["enum"] == [0, 32, 64, 96]
    assert components["AccountOut"]["properties"]["number"]["pattern"] == "^(\\+[1-9][0-9]{6,14})?$"
    assert components["AccountCreate"]["properties"]["number"]["pattern"] == DIALABLE_PATTERN[:-2] + "$"
    tenant = await make_tenant()
    taken = await client.post(
        "/v1.0/agents",
        json={"username": tenant.agent.username, "password": "password-123"},
        headers=tenant.admin.headers,
    )
    assert taken.status_code == 409
    wrong = await client.post("/auth/login", json={"username": tenant.agent.username, "password": "nope"})
    assert wrong.status_code == 401


async def test_options_lists_every_method_of_the_path(client):
    expected = {
        "/v1.0/agents": "GET, OPTIONS, POST",
        f"/v1.0/agents/{uuid.uuid4()}": "DELETE, GET, OPTIONS, PUT",
        "/v1.0/flows": "GET, OPTIONS, POST",
        "/v1.0/customer": "GET, OPTIONS, PUT",
        f"/v1.0/conversations/{uuid.uuid4()}/messages": "GET, OPTIONS, POST",
        "/auth/login": "OPTIONS, POST",
    }
    for path, allow in expected.items():
        response = await client.options(path)
        assert response.status_code == 204 and response.headers["allow"] == allow, (path, response.headers)


async def test_actions_are_documented_as_a_union_tagged_by_type(client):
    components = (await client.get("/schema/openapi.json")).json()["components"]["schemas"]
    for name in ("ActionIn", "ActionOut"):
        union = components[name]
        assert union["discriminator"]["propertyName"] == "type"
        assert set(union["discriminator"]["mapping"]) == set(OPTION_TYPES), name
    mapping = components["ActionIn"]["discriminator"]["mapping"]
    goto = components[mapping["goto"].rsplit("/", 1)[1]]
    assert goto["properties"]["type"]["enum"] == ["goto"] and "option" in goto["required"]
    option = components[goto["properties"]["option"]["$ref"].rsplit("/", 1)[1]]
    assert set(option["required"]) == {"target_id", "loop_count"} and option["additionalProperties"] is False
    stop = components[mapping["stop"].rsplit("/", 1)[1]]
    assert "option" not in stop["required"]  # an empty option may be left out
    flow = components["FlowCreate"]["properties"]["actions"]["items"]
    assert flow == {"$ref": "#/components/schemas/ActionIn"}


def _walk(node, found):
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            _walk(value, found)
    elif isinstance(node, list):
        for value in node:
            _walk(value, found)
    return found


async def test_the_document_speaks_json_schema_not_python(client):
    """Patterns mean the same to clients (ECMA) as to the API (Python), optional parameters are
    absent rather than null, each body and media type is the one really exchanged."""
    schema = (await client.get("/schema/openapi.json")).json()
    patterns = [n["pattern"] for n in _walk(schema, []) if isinstance(n.get("pattern"), str)]
    assert len(patterns) > 10
    for pattern in patterns:
        assert not re.search(r"\\[ZAsSdDwWb]", pattern), pattern
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                assert {"type": "null"} not in parameter["schema"].get("oneOf", []), (method, path, parameter)
    paths = schema["paths"]
    for path in ("/codec/decode", "/codec/encode"):
        body = paths[path]["post"]["requestBody"]
        assert body["required"]
        assert body["content"]["application/json"]["schema"]["$ref"].endswith("/PayloadsJSON")
    assert set(paths["/v1.0/events"]["get"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(paths["/v1.0/hooks/accounts/{account_id}"]["post"]["responses"]["200"]["content"]) == {
        "application/xml",
        "application/json",
    }
    assert paths["/auth/login"]["post"]["security"] == []
    assert paths["/v1.0/hooks/accounts/{account_id}"]["post"]["security"] == []
    assert "security" not in paths["/v1.0/agents"]["get"]  # the document's bearer token applies
    status = next(p for p in paths["/v1.0/activeflows"]["get"]["parameters"] if p["name"] == "status")
    assert status["schema"]["enum"] == ["running", "ended", "failed", "stopped"]


# --- defects the schemathesis run (test_schemathesis.py) found ---------------------------------


async def test_null_is_no_value_of_an_optional_query_parameter(client):
    """Litestar read `?owner_id=null` as no filter at all and answered every conversation."""
    tenant = await make_tenant()
    for path in (
        "/v1.0/conversations?owner_id=null",
        "/v1.0/activeflows?conversation_id=null",
        "/v1.0/activeflows?status=null",
        "/v1.0/webhook_deliveries?status=null",
        "/v1.0/webhook_deliveries?event_type=null",
        f"/v1.0/activeflows?conversation_id={uuid.uuid4()}&conversation_id=null",
    ):
        answer = await client.get(path, headers=tenant.admin.headers)
        assert answer.status_code == 400 and "null" in answer.json()["error"]["message"], (path, answer.text)
    # A text parameter takes the word: it is a page token (a bad one) here, not a missing one.
    assert (await client.get("/v1.0/agents?page_token=null", headers=tenant.admin.headers)).status_code == 400
    assert (await client.get("/v1.0/agents?token=null", headers=tenant.admin.headers)).status_code == 200


async def test_last_event_id_takes_ascii_digits_only(client):
    """`"²".isdigit()` is true and `int("²")` raises: a 500 before."""
    tenant = await make_tenant()
    for value in (b"\xb2", "\u0663".encode(), b"1\xb2"):
        answer = await client.get("/v1.0/events", headers={**tenant.admin.headers, "Last-Event-ID": value})
        assert answer.status_code == 400, (value, answer.text)


async def test_a_final_newline_is_no_part_of_a_pattern_match(client):
    """Python's `$` also matches before a final newline: "admin\\n" was a username, "a\\n" an
    action id. And `\\s` differs between Python and JSON Schema: U+FEFF is whitespace to clients."""
    tenant = await make_tenant()
    for username in ("newline\n", "bom\ufeff", "nel\x85", "sep\x1c"):
        body = {"username": f"{uuid.uuid4().hex[:6]}{username}", "password": "password-123"}
        answer = await client.post("/v1.0/agents", json=body, headers=tenant.admin.headers)
        assert answer.status_code == 400, (username, answer.text)
    action = {"id": "a\n", "type": "stop"}
    answer = await client.post("/v1.0/flows", json={"actions": [action]}, headers=tenant.admin.headers)
    assert answer.status_code == 400, answer.text
    account = {"type": "sms", "number": "+14155550123\n"}
    answer = await client.post("/v1.0/accounts", json=account, headers=tenant.admin.headers)
    assert answer.status_code == 400, answer.text


async def test_codec_bodies_are_payloads_or_400(settings, pg):
    """protobuf's JSON parser took `[]` and `{"payloads": [{"data": "!!!!"}]}` as empty payloads."""
    keyed = dataclasses.replace(settings, temporal_codec_key="k1:" + "A" * 43 + "=")
    tenant = await make_tenant()
    async with serving(keyed, restore_engine=pg) as url, httpx.AsyncClient(base_url=url) as http:
        for body in ("[]", '{"payloads": [{"data": "!!!!"}]}', '{"payloads": [{"data": "QQ"}]}', '{"x": 1}'):
            answer = await http.post("/codec/encode", content=body, headers=tenant.admin.headers)
            assert answer.status_code == 400, (body, answer.text)
        good = '{"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "MQ=="}]}'
        encoded = await http.post("/codec/encode", content=good, headers=tenant.admin.headers)
        assert encoded.status_code == 200, encoded.text
        decoded = await http.post("/codec/decode", content=encoded.text, headers=tenant.admin.headers)
        assert decoded.json() == msgspec.json.decode(good)


async def test_a_running_activeflow_answers_without_a_worker(settings, pg):
    """The live state is a workflow query, which waits for a worker: none polling, the request
    hung until the client gave up. The table's state answers then."""
    unpolled = dataclasses.replace(settings, temporal_task_queue=f"unpolled-{uuid.uuid4().hex[:6]}")
    tenant = await make_tenant()
    served = serving(unpolled, restore_engine=pg)
    async with served as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        flow = await http.post(
            "/v1.0/flows",
            json={"actions": [{"id": "w", "type": "sleep", "option": {"duration_ms": 60_000}}]},
            headers=tenant.admin.headers,
        )
        await http.put(
            f"/v1.0/accounts/{tenant.account['id']}",
            json={"message_flow_id": flow.json()["id"]},
            headers=tenant.admin.headers,
        )
        await open_conversation(http, tenant)
        [run] = (await http.get("/v1.0/activeflows", headers=tenant.admin.headers)).json()["result"]
        answer = await http.get(f"/v1.0/activeflows/{run['id']}", headers=tenant.admin.headers)
        assert answer.status_code == 200 and answer.json()["status"] == "running", answer.text


async def test_ones_own_password_needs_the_old_one(client):
    """A stolen admin token could set its owner's password and lock the owner out."""
    tenant = await make_tenant()
    own = await client.put(
        f"/v1.0/agents/{tenant.admin.id}", json={"password": "taken-over-1"}, headers=tenant.admin.headers
    )
    assert own.status_code == 400 and "/auth/password" in own.json()["error"]["message"]
    assert (await client.get("/v1.0/agents", headers=tenant.admin.headers)).status_code == 200
    other = await client.put(
        f"/v1.0/agents/{tenant.agent.id}", json={"password": "reset-by-admin"}, headers=tenant.admin.headers
    )
    assert other.status_code == 200
