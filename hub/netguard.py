"""Which hosts the hub may call on a customer's behalf: no loopback, private or link-local targets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from hub.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The target resolves to an address the hub must not call, or does not resolve at all."""


def is_public(address: Address) -> bool:
    """Globally routable unicast only: a webhook must never reach the hub's own network."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """The addresses of `host`, each checked; one refused address refuses the host (a record set
    that mixes public and private addresses is a rebinding attempt, not a configuration)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"host {host!r} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in addresses:
        check_address(text, allow_private, host)
    return addresses


def check_address(text: str, allow_private: bool, host: str = "") -> None:
    """Refuses an IP address (as text) that is not public, unless private targets are allowed."""
    if allow_private:
        return
    if not is_public(ipaddress.ip_address(text.split("%", 1)[0])):
        what = "a loopback, private or link-local address"
        if host and host != text:
            raise TargetRefused(f"host {host!r} resolves to {text}, {what}")
        raise TargetRefused(f"{text} is {what}")


def ip_literal(host: str) -> str | None:
    """`host` itself when it is an IP address (no DNS involved), else None."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def check_webhook_uri(uri: str, allow_private: bool) -> None:
    """A webhook target the hub can and may call; BadRequest naming what is wrong otherwise."""
    try:
        parts = urlsplit(uri)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise BadRequest(f"webhook_uri is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("webhook_uri must be an absolute http:// or https:// URL")
    if parts.fragment:
        raise BadRequest("webhook_uri must not carry a #fragment")
    try:
        await resolve(parts.hostname, port, allow_private)
    except TargetRefused as exc:
        raise BadRequest(f"webhook_uri refused: {exc}") from exc
