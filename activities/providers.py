"""Provider wire formats for sending: Twilio-compatible SMS REST and the LINE Messaging API push."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from hub.channels import line, sms


class ProviderRejected(Exception):
    """The provider refused the message (4xx): retrying cannot help."""

    # Ids of the parts it had accepted before (a LINE message in several pushes).
    provider_ids: list[str] = []


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


@dataclass
class Sent:
    """What the provider answered for an accepted message."""

    provider_ids: list[str]
    # The hub's delivery_status the answer implies (Twilio: its `status`; LINE: sent).
    delivery_status: str = ""


async def send_sms(http: httpx.AsyncClient, base_url: str, sid: str, token: str, out: Outgoing) -> Sent:
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
    answer = response.json()
    message_sid = str(answer.get("sid", ""))
    delivery_status = sms.DELIVERY_STATUS.get(str(answer.get("status", "")), "")
    return Sent([message_sid] if message_sid else [], delivery_status)


def _sent_ids(response: httpx.Response) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return []
    sent = body.get("sentMessages") if isinstance(body, dict) else None
    return [str(m["id"]) for m in sent or [] if isinstance(m, dict) and m.get("id")]


async def push_line(http: httpx.AsyncClient, base_url: str, channel_token: str, out: Outgoing) -> Sent:
    """POST {base}/v2/bot/message/push, once per 5 message objects, in order. Each push has its own
    X-Line-Retry-Key, stable across attempts: a retried push is delivered once, and a 409 (that
    key was accepted before) carries the earlier push's `sentMessages` in its body."""
    ids: list[str] = []
    batches = line.pushes(line.message_objects(out.text, out.medias))
    for index, objects in enumerate(batches):
        try:
            response = await http.post(
                f"{base_url}/v2/bot/message/push",
                json={"to": out.to, "messages": objects},
                headers={
                    "Authorization": f"Bearer {channel_token}",
                    "X-Line-Retry-Key": line.retry_key(out.message_id, index),
                },
            )
        except httpx.TransportError as exc:
            raise ProviderUnavailable(f"{exc.__class__.__name__} calling LINE push") from exc
        if response.status_code != 409:
            try:
                _raise_for(response)
            except ProviderRejected as exc:
                if len(batches) > 1:
                    exc.args = (f"push {index + 1} of {len(batches)}: {exc}",)
                exc.provider_ids = ids
                raise
        ids.extend(_sent_ids(response))
    return Sent(ids, "sent")


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


async def line_group_name(http: httpx.AsyncClient, base_url: str, channel_token: str, group_id: str) -> str:
    """The group's name from GET /v2/bot/group/{groupId}/summary, or "" when it cannot be had."""
    try:
        response = await http.get(
            f"{base_url}/v2/bot/group/{quote(group_id, safe='')}/summary",
            headers={"Authorization": f"Bearer {channel_token}"},
        )
    except httpx.TransportError:
        return ""
    if response.status_code != 200:
        return ""
    try:
        return str(response.json().get("groupName") or "")
    except ValueError:
        return ""
