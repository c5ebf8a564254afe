"""Provider I/O: performs the requests a channel (hub/channels/) built, and reads the answers
back through it. Nothing here knows a provider's wire format."""

from __future__ import annotations

from typing import Any

import httpx

from hub.channels import HttpRequest, NameLookup, Outgoing, Sent, line, sms

__all__ = [
    "Outgoing",
    "ProviderRejected",
    "ProviderUnavailable",
    "Sent",
    "lookup_name",
    "perform",
    "push_line",
    "send_sms",
]


class ProviderRejected(Exception):
    """The provider refused the message (4xx): retrying cannot help."""

    # Ids of the parts it had accepted before (a LINE message in several pushes).
    provider_ids: list[str] = []


class ProviderUnavailable(Exception):
    """The provider failed (5xx, timeout, connection): a later attempt may succeed."""


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(f"provider answered {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise ProviderRejected(f"provider answered {response.status_code}: {response.text[:500]}")


async def _request(http: httpx.AsyncClient, request: HttpRequest) -> httpx.Response:
    try:
        return await http.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=dict(request.form) if request.form is not None else None,
            json=request.json,
            auth=request.auth,
        )
    except httpx.TransportError as exc:  # timeouts, refused connections, resets
        raise ProviderUnavailable(f"{exc.__class__.__name__} calling {request.url}") from exc


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


async def perform(http: httpx.AsyncClient, requests: list[HttpRequest], channel: Any) -> Sent:
    """Sends the requests in order; `channel.read_answer` reads each accepted answer. A refusal
    carries the ids of the parts accepted before it."""
    ids: list[str] = []
    delivery_status = ""
    for request in requests:
        response = await _request(http, request)
        if response.status_code not in request.accepted_statuses:
            try:
                _raise_for(response)
            except ProviderRejected as exc:
                if request.label:
                    exc.args = (f"{request.label}: {exc}",)
                exc.provider_ids = ids
                raise
        sent = channel.read_answer(response.status_code, _json(response))
        ids.extend(sent.provider_ids)
        delivery_status = sent.delivery_status or delivery_status
    return Sent(ids, delivery_status)


async def send_sms(http: httpx.AsyncClient, base_url: str, sid: str, token: str, out: Outgoing) -> Sent:
    """POST {base}/2010-04-01/Accounts/{sid}/Messages.json; returns the provider's message sid."""
    return await perform(http, [sms.create_request(base_url, sid, token, out)], sms)


async def push_line(http: httpx.AsyncClient, base_url: str, channel_token: str, out: Outgoing) -> Sent:
    """The LINE pushes of one message (see `hub.channels.line.push_requests`)."""
    return await perform(http, line.push_requests(base_url, channel_token, out), line)


async def lookup_name(http: httpx.AsyncClient, lookup: NameLookup) -> str:
    """A display name by the channel's lookup (LINE profile or group summary), else its fallback."""
    if lookup.request is None:
        return lookup.fallback
    try:
        response = await _request(http, lookup.request)
    except ProviderUnavailable:
        return lookup.fallback
    body = _json(response) if response.status_code == 200 else None
    name = str(body.get(lookup.field) or "") if isinstance(body, dict) else ""
    return name or lookup.fallback
