"""CORS for browser clients (HUB_CORS_ORIGINS): preflight and simple requests of the API and of the
live event stream from a listed origin; nothing for other origins, nor when the setting is empty."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from tests.helpers import make_tenant, serving

INBOX = "https://inbox.example.com"


@pytest.fixture
async def cors_client(settings, pg):
    listed = dataclasses.replace(settings, cors_origins=f"{INBOX}, http://localhost:5173")
    async with serving(listed, restore_engine=pg) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield http


def preflight(origin: str, method: str, headers: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_and_simple_requests_from_a_listed_origin(cors_client):
    tenant = await make_tenant()
    answer = await cors_client.options(
        "/v1.0/conversations/00000000-0000-0000-0000-000000000001",
        headers=preflight(INBOX, "PUT", "authorization,content-type"),
    )
    assert answer.status_code in (200, 204), answer.text
    assert answer.headers["access-control-allow-origin"] == INBOX
    assert "PUT" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "access-control-allow-credentials" not in answer.headers  # tokens, not cookies

    listed = await cors_client.get("/v1.0/conversations", headers={"Origin": INBOX, **tenant.admin.headers})
    assert listed.status_code == 200
    assert listed.headers["access-control-allow-origin"] == INBOX
    assert "x-request-id" in listed.headers["access-control-expose-headers"].lower()
    # Errors carry the header too, so the page can read the error envelope.
    denied = await cors_client.get("/v1.0/conversations", headers={"Origin": INBOX})
    assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == INBOX


async def test_the_event_stream_answers_a_listed_origin(cors_client):
    tenant = await make_tenant()
    asked = preflight(INBOX, "GET", "authorization,last-event-id")
    answer = await cors_client.options("/v1.0/events", headers=asked)
    assert answer.status_code in (200, 204), answer.text
    assert answer.headers["access-control-allow-origin"] == INBOX
    assert "last-event-id" in answer.headers["access-control-allow-headers"].lower()
    # What EventSource sends: a simple GET with the token in the query.
    async with cors_client.stream(
        "GET", "/v1.0/events", params={"token": tenant.agent.token}, headers={"Origin": INBOX}
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert stream.headers["access-control-allow-origin"] == INBOX


async def test_other_origins_get_no_access(cors_client):
    tenant = await make_tenant()
    evil = "https://evil.example.net"
    answer = await cors_client.options("/v1.0/conversations", headers=preflight(evil, "GET", "authorization"))
    assert "access-control-allow-origin" not in answer.headers
    listed = await cors_client.get("/v1.0/conversations", headers={"Origin": evil, **tenant.admin.headers})
    assert "access-control-allow-origin" not in listed.headers


async def test_cors_is_off_by_default(client, settings):
    assert settings.cors_origins == ""
    tenant = await make_tenant()
    answer = await client.options("/v1.0/conversations", headers=preflight(INBOX, "GET", "authorization"))
    assert "access-control-allow-origin" not in answer.headers
    listed = await client.get("/v1.0/conversations", headers={"Origin": INBOX, **tenant.admin.headers})
    assert listed.status_code == 200 and "access-control-allow-origin" not in listed.headers
