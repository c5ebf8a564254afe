"""Which hosts the hub may call on a customer's behalf: no loopback, private or link-local targets."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

from hub.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefused(Exception):
    """The target resolves to an address the hub must not call, or does not resolve at all."""


# IPv6 forms that carry an IPv4 address: the IPv4 address is where the packets end up.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")  # RFC 3056: bits 16-47
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d (:: and ::1 fall in too)
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 2765 ::ffff:0:a.b.c.d
# Never a target: local-use NAT64 (RFC 8215, its embedding depends on the local prefix length),
# Teredo (the client address is obfuscated and reached through a relay), site-local (RFC 3879).
_REFUSED_V6 = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("2001::/32"),
    ipaddress.IPv6Network("fec0::/10"),
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, translated, compatible, NAT64, 6to4)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    if address in _NAT64 or address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED:
        return ipaddress.IPv4Address(address.packed[-4:])
    return None


def is_public(address: Address) -> bool:
    """Globally routable unicast only: a webhook must never reach the hub's own network."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _REFUSED_V6):
            return False
        if (ipv4 := embedded_ipv4(address)) is not None:
            address = ipv4
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


_INET_ATON_PART = re.compile(r"^(0x[0-9a-f]*|0[0-7]*|[1-9][0-9]*)$", re.IGNORECASE)


def _inet_aton_number(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    return int(part, 8) if part[0] == "0" else int(part)


def _inet_aton(host: str) -> str | None:
    """IPv4 in the forms the C resolver accepts besides dotted quads: `2130706433`, `0x7f.1`,
    `0177.0.0.1`, `127.1`, `0`: one to four parts, decimal, octal or hex, the last filling the rest."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.match(part) for part in parts):
        return None
    values = [_inet_aton_number(part) for part in parts]
    *leading, last = values
    if any(value > 255 for value in leading) or last >= 256 ** (5 - len(values)):
        return None
    number = sum(value << (8 * (3 - i)) for i, value in enumerate(leading)) + last
    return str(ipaddress.IPv4Address(number))


def ip_literal(host: str) -> str | None:
    """The address `host` names without DNS (an IP literal in any form the resolver takes), else None."""
    text = host.strip("[]").split("%", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return _inet_aton(text)


def is_loopback_name(host: str) -> bool:
    """`localhost` and `*.localhost` always mean this machine (RFC 6761)."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def check_literal_target(url: str, allow_private: bool, template: bool = False) -> None:
    """Refuses a URL whose host is written as a private address (or localhost), without DNS.
    Names are checked where the connection is made. In a `template` (a flow's URL before
    substitution) a host with `${...}` can only be checked at run time."""
    parts = urlsplit(url)
    if allow_private or (template and "${" in parts.netloc):
        return
    host = parts.hostname or ""
    if is_loopback_name(host):
        raise TargetRefused(f"{host} is a loopback address")
    if (literal := ip_literal(host)) is not None:
        check_address(literal, allow_private)


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
