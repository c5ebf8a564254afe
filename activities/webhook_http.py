"""One webhook attempt: Standard Webhooks signing, and an HTTP client that connects only to addresses
the guard allows, checked where the connection is made so a DNS answer cannot change after the check.

aiohttp rather than httpx: with dozens of posts in flight it sends several times more per second
on the same CPU (httpcore's pool bookkeeping grows with its connections)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks import Webhook
from yarl import URL

from hub import netguard
from hub.dispatch import QueuedDelivery
from hub.events import payload
from hub.webhooks import Endpoint, retry_after_seconds

USER_AGENT = "conversation-hub-webhooks/1.0"
# Enough of an error answer to tell the customer what their endpoint said.
ANSWER_SNIPPET = 300
# Reading an answer to its end keeps the connection for the next post, up to this size.
MAX_ANSWER = 64 * 1024


class GuardedResolver(AbstractResolver):
    """Resolves names for the connector and refuses those with a private address: aiohttp then
    connects to exactly the addresses returned here."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await netguard.resolve(host, port, self._allow_private):
            address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_UNSPEC, address_family):
                results.append(
                    {
                        "hostname": host,
                        "host": address,
                        "port": port,
                        "family": address_family,
                        "proto": 0,
                        "flags": socket.AI_NUMERICHOST,
                    }
                )
        if not results:
            raise OSError(f"{host} has no address of family {family!r}")
        return results

    async def close(self) -> None:
        return None


def guarded_session(
    allow_private: bool, timeout_s: float | None = None, max_connections: int = 100, **kwargs
) -> aiohttp.ClientSession:
    """An HTTP client for customer-given URLs: it connects only to addresses the guard allowed
    (no re-resolution after the check) and ignores proxies from the environment."""
    connector = aiohttp.TCPConnector(limit=max_connections, resolver=GuardedResolver(allow_private))
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else aiohttp.ClientTimeout()
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False, **kwargs)


def check_url_host(url: str, allow_private: bool) -> None:
    """The resolver checks names; an address written in the URL never reaches it."""
    if (literal := _address_in(url)) is not None:
        netguard.check_address(literal, allow_private)


@lru_cache(maxsize=1024)
def _parsed(url: str) -> URL:
    """An endpoint's URL, parsed once: every post to it needs it."""
    return URL(url)


def _address_in(url: str) -> str | None:
    """The IP address written as the URL's host, if it is one."""
    return _literal_host(_parsed(url).host or "")


@lru_cache(maxsize=1024)
def _literal_host(host: str) -> str | None:
    return netguard.ip_literal(host)


@lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)


def sign(secrets: tuple[str, ...], msg_id: str, timestamp: datetime, body: str) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per signing secret, space-separated."""
    return " ".join(_signer(secret).sign(msg_id, timestamp, body) for secret in secrets)


@dataclass
class Attempt:
    ok: bool
    status_code: int | None = None
    error: str = ""
    # Seconds a 429 or 503 answer asked us to wait (its Retry-After header).
    retry_after_s: float | None = None

    @property
    def gone(self) -> bool:
        """410 Gone: the receiver wants no more webhooks (Standard Webhooks: disable the endpoint)."""
        return self.status_code == 410


class WebhookSender:
    """Posts signed webhooks. No proxies from the environment and no redirects: a webhook goes
    where its URL says or nowhere. The session is made on first use, in the worker's event loop."""

    def __init__(self, allow_private: bool, timeout_s: float, max_connections: int = 256) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No session timeout: `send` bounds the whole exchange itself (one timer per post, not
            # two). No cookie jar: an endpoint's cookies must not ride along on later webhooks.
            self._session = guarded_session(
                self.allow_private,
                None,
                self.max_connections,
                headers={"user-agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, endpoint: Endpoint, delivery: QueuedDelivery) -> Attempt:
        """Sends the event once with the endpoint's method; any 2xx is delivered, all else failed."""
        body = payload(delivery.event_type, delivery.data, delivery.event_time)
        msg_id = str(delivery.event_id)
        stamp = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            # Signed afresh per attempt: receivers reject timestamps older than a few minutes.
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": sign(endpoint.secrets, msg_id, stamp, body.decode()),
        }
        try:
            check_url_host(endpoint.uri, self.allow_private)
            # A deadline for the whole exchange, however slowly the endpoint drips its answer.
            async with asyncio.timeout(self.timeout_s):
                async with self._http().request(
                    endpoint.method, _parsed(endpoint.uri), data=body, headers=headers, allow_redirects=False
                ) as answer:
                    snippet = await _read_answer(answer)
                    status = answer.status
                    retry_after = answer.headers.get("retry-after")
        except TimeoutError:
            return Attempt(False, None, f"no answer within {self.timeout_s:g} s")
        except netguard.TargetRefused as exc:
            return Attempt(False, None, f"target refused: {exc}")
        except aiohttp.ClientConnectorDNSError as exc:
            return Attempt(False, None, f"target refused: {exc.os_error}")
        except (aiohttp.ClientError, ValueError) as exc:
            return Attempt(False, None, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return Attempt(True, status)
        text = snippet.decode(errors="replace").strip()
        wait = retry_after_seconds(retry_after, datetime.now(UTC)) if status in (429, 503) else None
        return Attempt(False, status, f"answered {status}: {text}"[:500], retry_after_s=wait)


async def _read_answer(answer: aiohttp.ClientResponse) -> bytes:
    """The start of the answer. A small answer is read to its end, so the connection is reused;
    a large one is cut off (and its connection closed) instead of being downloaded."""
    received, total = b"", 0
    async for chunk in answer.content.iter_chunked(16 * 1024):
        total += len(chunk)
        if len(received) < ANSWER_SNIPPET:
            received += chunk
        if total > MAX_ANSWER:
            break
    return received[:ANSWER_SNIPPET]
