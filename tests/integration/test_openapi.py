"""The OpenAPI document describes the error envelope the API really answers with."""

from __future__ import annotations

import uuid

import msgspec

from api.openapi import ErrorEnvelope
from tests.helpers import make_tenant


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
    assert set(components["ActionIn"]["properties"]["type"]["enum"]) >= {"fetch", "webhook_send", "stop"}
    assert components["AccountOut"]["properties"]["number"]["pattern"] == "^(\\+[1-9][0-9]{6,14})?$"
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
