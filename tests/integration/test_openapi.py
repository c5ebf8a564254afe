"""The OpenAPI document describes the error envelope the API really answers with."""

from __future__ import annotations

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
