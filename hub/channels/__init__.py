"""Channels by account type: what each one can carry (pure data), and checks on outgoing messages.

Each channel module (`sms`, `line`) holds its capabilities and the pure functions that turn hub
messages into the provider's shapes; nothing here does I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    name: str
    # Characters of text one message may carry (the provider refuses more).
    text_limit: int
    # Message objects one provider request may carry (LINE push: 5); 0 = no such split.
    max_push_messages: int
    # Media kinds (the part of a media `type` before "/": image, video, ...) it can send; "*" = any.
    media_kinds: frozenset[str]
    # Media URLs must be https (LINE fetches them only over TLS).
    needs_https_media: bool
    max_medias: int = 10


def media_kind(media_type: str) -> str:
    """`image/png` and `image` are both the kind `image`; an empty type counts as an image."""
    return (media_type or "image").split("/", 1)[0].strip().lower() or "image"


def outgoing_problem(caps: Capabilities, text: str, medias: Sequence[Any]) -> str:
    """Why `caps`' channel cannot carry this message ("" when it can)."""
    if len(text) > caps.text_limit:
        return f"text is {len(text):,} characters; {caps.name} messages carry at most {caps.text_limit:,}"
    if len(medias) > caps.max_medias:
        return f"{caps.name} messages carry at most {caps.max_medias} medias"
    for media in medias:
        kind, url = media_kind(_get(media, "type")), _get(media, "url")
        if "*" not in caps.media_kinds and kind not in caps.media_kinds:
            allowed = ", ".join(sorted(caps.media_kinds))
            return f"{caps.name} cannot send {kind} medias here (only {allowed})"
        if caps.needs_https_media and not url.lower().startswith("https://"):
            return f"{caps.name} requires https media URLs; {url[:100]!r} is not one"
    return ""


def _get(media: Any, key: str) -> str:
    return str(media.get(key, "") if isinstance(media, dict) else getattr(media, key, "")) or ""


from hub.channels import line, sms  # noqa: E402 - they build on Capabilities above

REGISTRY: dict[str, Capabilities] = {"sms": sms.CAPABILITIES, "line": line.CAPABILITIES}


def capabilities(account_type: str) -> Capabilities | None:
    """The capabilities of an account type; None for a type without channel rules yet."""
    return REGISTRY.get(account_type)
