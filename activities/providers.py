"""Provider I/O: performs the requests a channel (hub/channels/) built, and reads the answers
back through it. Nothing here knows a provider's wire format."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import aiohttp
import aiosmtplib
import httpx

from activities.webhook_http import check_url_host
from hub import mail, netguard
from hub.channels import Attachment, HttpRequest, NameLookup, Outgoing, Sent, line, sms
from hub.channels.email import SmtpRequest

__all__ = [
    "Outgoing",
    "fetch_attachments",
    "send",
    "send_smtp",
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


async def send(
    http: httpx.AsyncClient, channel: Any, built: Any, timeout_s: float = 30, allow_private: bool = False
) -> Sent:
    """Sends what `channel.build_request` described: HTTP requests, or one SMTP message."""
    if isinstance(built, SmtpRequest):
        return await send_smtp(built, timeout_s=timeout_s, allow_private=allow_private)
    return await perform(http, built, channel)


def _smtp_answer(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"SMTP relay answered {exc.code}: {exc.message}"[:500]


async def send_smtp(request: SmtpRequest, timeout_s: float = 30, allow_private: bool = False) -> Sent:
    """One message through the relay. 4xx answers and connection problems are worth another
    attempt (ProviderUnavailable); 5xx answers are final (ProviderRejected, with the answer). The
    relay's host is checked like any target the hub calls for a customer (no private addresses
    unless allowed)."""
    try:
        await netguard.resolve(request.host, request.port, allow_private)
    except netguard.TargetRefused as exc:
        raise ProviderRejected(f"SMTP relay refused: {exc}") from exc
    try:
        await aiosmtplib.send(
            request.message,
            sender=request.sender,
            recipients=request.recipients,
            hostname=request.host,
            port=request.port,
            username=request.username or None,
            password=request.password or None,
            use_tls=request.security == "tls",
            start_tls=True if request.security == "starttls" else False,
            timeout=timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        answer = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)[:500]
        if codes and all(400 <= c < 500 for c in codes):
            raise ProviderUnavailable(f"SMTP relay answered {answer}") from exc
        raise ProviderRejected(f"SMTP relay refused the recipient: {answer}") from exc
    except aiosmtplib.SMTPResponseException as exc:
        if 400 <= exc.code < 500 or exc.code < 0:
            raise ProviderUnavailable(_smtp_answer(exc)) from exc
        raise ProviderRejected(_smtp_answer(exc)) from exc
    except aiosmtplib.SMTPNotSupported as exc:
        raise ProviderRejected(f"SMTP relay: {exc}") from exc
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        raise ProviderUnavailable(
            f"{exc.__class__.__name__} talking to {request.host}:{request.port}: {exc}"
        ) from exc
    return Sent([request.message_id], "sent")


class _TooLarge(Exception):
    pass


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if (response.content_length or 0) > limit:
        raise _TooLarge
    received = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        received += chunk
        if len(received) > limit:
            raise _TooLarge
    return bytes(received)


def _filename(url: str, index: int) -> str:
    name = url.split("?", 1)[0].rstrip("/").rpartition("/")[2]
    return name[:100] or f"attachment-{index + 1}"


async def fetch_attachments(
    session: aiohttp.ClientSession,
    customer_id: UUID,
    medias: list[dict[str, str]],
    public_url: str,
    limit: int,
    allow_private: bool,
) -> list[Attachment]:
    """The bytes of each media: a hub media (`/v1.0/media/{id}`) from the media table, of this
    customer only; any other URL fetched over HTTP through the guard (no private targets unless
    allowed, no redirects), at most `limit` bytes. What cannot be had is ProviderRejected (the
    message fails with the reason); a server error or timeout is ProviderUnavailable (retried)."""
    files: list[Attachment] = []
    for index, media in enumerate(medias):
        url = media.get("url") or ""
        if (media_id := mail.media_id_of(url, public_url)) is not None:
            try:
                row = await mail.get_media(customer_id, media_id)
            except Exception as exc:  # NotFound: another customer's or a missing media
                raise ProviderRejected(f"media {index + 1}: {url} is not a media of this customer") from exc
            files.append(
                Attachment(bytes(row["data"]), row["content_type"], row["filename"] or _filename(url, index))
            )
            continue
        try:
            netguard.check_literal_target(url, allow_private)
            check_url_host(url, allow_private)
            async with session.get(url, allow_redirects=False) as response:
                if response.status >= 500 or response.status == 429:
                    raise ProviderUnavailable(f"media {index + 1}: {url} answered {response.status}")
                if response.status != 200:
                    raise ProviderRejected(f"media {index + 1}: {url} answered {response.status}")
                data = await _read_capped(response, limit)
                content_type = response.headers.get("content-type", "") or media.get("type", "")
        except (netguard.TargetRefused, ValueError) as exc:
            raise ProviderRejected(f"media {index + 1}: target refused: {exc}") from exc
        except _TooLarge as exc:
            raise ProviderRejected(f"media {index + 1}: {url} is larger than {limit:,} bytes") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderUnavailable(f"media {index + 1}: {exc.__class__.__name__} fetching {url}") from exc
        files.append(Attachment(data, content_type or "application/octet-stream", _filename(url, index)))
    return files
