"""Provider wire formats for sending: Twilio-compatible SMS REST and the LINE Messaging API push."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class ProviderRejected(Exception):
    """The provider refused the message (4xx): retrying cannot help."""


class ProviderUnavailable(Exception):
    """The provider failed (5xx, timeout, connection): a later attempt may succeed."""


@dataclass
class Outgoing:
    message_id: str
    to: str
    sender: str
    text: str
    medias: list[dict[str, str]]
    status_callback: str = ""


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 500 or response.status_code == 429:
        raise ProviderUnavailable(f"provider answered {response.status_code}: {response.text[:200]}")
    if response.status_code >= 400:
        raise ProviderRejected(f"provider answered {response.status_code}: {response.text[:500]}")


async def _post(http: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    try:
        response = await http.post(url, **kwargs)
    except httpx.TransportError as exc:  # timeouts, refused connections, resets
        raise ProviderUnavailable(f"{exc.__class__.__name__} calling {url}") from exc
    _raise_for(response)
    return response


async def send_sms(http: httpx.AsyncClient, base_url: str, sid: str, token: str, out: Outgoing) -> str:
    """POST {base}/2010-04-01/Accounts/{sid}/Messages.json; returns the provider's message sid."""
    form: dict[str, str | list[str]] = {"To": out.to, "From": out.sender, "Body": out.text}
    if media_urls := [m["url"] for m in out.medias if m.get("url")]:
        form["MediaUrl"] = media_urls
    if out.status_callback:
        form["StatusCallback"] = out.status_callback
    response = await _post(
        http,
        f"{base_url}/2010-04-01/Accounts/{sid}/Messages.json",
        data=form,
        auth=(sid, token),
        # Ignored by providers that do not know it; the fake dedupes on it.
        headers={"Idempotency-Key": f"send-{out.message_id}"},
    )
    return str(response.json().get("sid", ""))


async def push_line(http: httpx.AsyncClient, base_url: str, channel_token: str, out: Outgoing) -> str:
    """POST {base}/v2/bot/message/push; X-Line-Retry-Key makes a retried push deliver once."""
    messages: list[dict[str, str]] = []
    if out.text:
        messages.append({"type": "text", "text": out.text})
    for media in out.medias:
        if media.get("url"):
            messages.append(
                {"type": "image", "originalContentUrl": media["url"], "previewImageUrl": media["url"]}
            )
    try:
        response = await http.post(
            f"{base_url}/v2/bot/message/push",
            json={"to": out.to, "messages": messages[:5]},
            headers={"Authorization": f"Bearer {channel_token}", "X-Line-Retry-Key": out.message_id},
        )
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"{exc.__class__.__name__} calling LINE push") from exc
    if response.status_code == 409:
        # Same retry key already accepted: the earlier attempt went through.
        return response.headers.get("x-line-accepted-request-id", "")
    _raise_for(response)
    try:
        sent = response.json().get("sentMessages") or []
    except ValueError:
        sent = []
    return str(sent[0].get("id")) if sent else response.headers.get("x-line-request-id", "")


async def line_profile(http: httpx.AsyncClient, base_url: str, channel_token: str, user_id: str) -> str:
    """The display name from GET /v2/bot/profile/{userId}, or "" when it cannot be had."""
    try:
        response = await http.get(
            f"{base_url}/v2/bot/profile/{user_id}", headers={"Authorization": f"Bearer {channel_token}"}
        )
    except httpx.TransportError:
        return ""
    if response.status_code != 200:
        return ""
    try:
        return str(response.json().get("displayName") or "")
    except ValueError:
        return ""
