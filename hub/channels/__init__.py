"""Channels: one module per account type, all with the same small, pure interface.

A channel module (`sms`, `line`, ...) holds no I/O. It declares

- `CAPABILITIES`: what it can carry (text limit, media kinds, https media, ...);
- `SIGNATURE_PROBLEM`: the 401 message when `verify` says no; `ACK`: the 200 answer to its hook;
- `verify(account, request, body) -> bool`: the provider's signature over a hook request
  (`HookRequest`: the public URL, headers, query); it may raise `Unauthorized` when the account
  lacks the credential to check with;
- `parse(account, request, body, settings) -> Parsed`: the provider's body turned into
  `InboundMessage`s (below) (and, for SMS, delivery reports); bad input raises `BadRequest`;
- `build_request(account, outgoing, settings) -> list[HttpRequest]`: the provider requests that
  send one hub message, in order, and `read_answer(status_code, body)`: the ids an accepted
  request's answer names. (A channel whose provider is not HTTP returns its own description, and
  `activities/providers.py` sends that.)

The hook controller (`api/controllers/hooks.py`) dispatches on the account type through
`channel()`; the send activity (`activities/messages.py`) builds with the channel and
`activities/providers.py` performs the requests. A new channel is one new module with this shape
plus its line in `CHANNELS` below; its account type is then named in `hub/accounts.py`, the
`type` enum of `api/schemas.py` and the title label in `hub/titles.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from hub.addresses import Address
from hub.models import Media


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
    # The hub fetches each media and sends its bytes (email attachments) instead of its URL.
    attaches_media: bool = False
    max_attachment_bytes: int = 0
    # Replies thread to the conversation (email: subject, In-Reply-To, References).
    threads: bool = False


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


# --- inbound ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HookRequest:
    """What a channel may look at besides the body: the URL as the provider signed it
    (HUB_PUBLIC_URL + path + query), headers with lowercase names, the query parameters."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    # Scratch space of this one request: a channel parses its body once for verify and parse.
    memo: dict[str, Any] = field(default_factory=dict, compare=False)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class Ack:
    """The 200 answer a provider expects from its hook."""

    content: Any
    media_type: str = "application/json"


@dataclass(frozen=True)
class StatusReport:
    """A provider's delivery report on an outgoing message (SMS status callbacks)."""

    provider_message_id: str
    # The hub's delivery_status ("" = a status the hub does not track) and the provider's words.
    delivery_status: str
    reason: str
    # The hub's message id when the callback URL names it (signed with the rest of the URL).
    message_id: UUID | None = None
    provider_status: str = ""


@dataclass(frozen=True)
class NameLookup:
    """How to learn a peer's display name when the body does not tell it (LINE profile, group
    summary): GET `request`, read `field` of its JSON answer; `fallback` when that gives nothing."""

    request: HttpRequest | None
    field: str = ""
    fallback: str = ""


@dataclass
class Parsed:
    """What one hook body carries."""

    messages: list[Any] = field(default_factory=list)  # InboundMessage
    statuses: list[StatusReport] = field(default_factory=list)
    # A batch (LINE): items that cannot be used are logged and skipped instead of failing the
    # request, and a flow that cannot start now is left to recovery. `skipped` says why, `total`
    # counts the items of the batch (all skipped: 400).
    batch: bool = False
    skipped: list[str] = field(default_factory=list)
    total: int = 0


# --- outbound --------------------------------------------------------------------------------


@dataclass
class Outgoing:
    """One hub message to send: who to, from whom, what."""

    message_id: str
    to: str
    sender: str
    text: str
    medias: list[dict[str, str]]
    status_callback: str = ""
    # Channels that thread (email): subject, in_reply_to, references of the conversation.
    thread: dict[str, str] | None = None
    # Channels that attach media: the medias' bytes, fetched by the send activity.
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True)
class Attachment:
    """A file to send: its bytes, type and name."""

    data: bytes
    content_type: str
    filename: str = ""


@dataclass(frozen=True)
class HttpRequest:
    """One provider request, described (activities/providers.py performs it)."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    form: Mapping[str, Any] | None = None
    json: Any = None
    auth: tuple[str, str] | None = None
    # Answers that mean "accepted before" (LINE: 409 for a reused retry key), read like a 2xx.
    accepted_statuses: tuple[int, ...] = ()
    # Which part of the message this request is ("push 2 of 3"), named in a rejection's reason.
    label: str = ""


@dataclass
class Sent:
    """What the provider answered for an accepted message."""

    provider_ids: list[str]
    # The hub's delivery_status the answer implies (Twilio: its `status`; LINE: sent).
    delivery_status: str = ""


# --- registry --------------------------------------------------------------------------------

@dataclass
class InboundMessage:
    """One inbound provider message, as a channel parsed it (stored by hub.inbound.store_inbound)."""

    account: dict[str, Any]
    peer: Address
    self_address: Address
    provider_message_id: str
    text: str = ""
    medias: list[Media] = field(default_factory=list)
    # A display name the provider told us (LINE profile); SMS peers are named by contacts.
    peer_display_name: str = ""
    # Who wrote, when that is not the peer (a member of a LINE group); None = the peer.
    sender: Address | None = None
    # The provider's raw message type (LINE: text, sticker, location...); "" = plain text.
    content_type: str = ""
    # A LINE follow/join: it opens the conversation and carries no message.
    opens_only: bool = False
    # How to learn the peer's name for a new conversation (hub.channels.NameLookup), None = no way.
    name_lookup: Any = None
    # The channel's own rows (email headers, attachments): awaited with the stored message, in
    # its transaction (not for a duplicate).
    stored_with: Any = None



from hub.channels import email, line, sms  # noqa: E402 - they build on the types above

# One line per channel: account type -> module.
CHANNELS = {
    "sms": sms,
    "line": line,
    "email": email,
}

REGISTRY: dict[str, Capabilities] = {kind: module.CAPABILITIES for kind, module in CHANNELS.items()}


def channel(account_type: str):
    """The channel module of an account type (None for an unknown type)."""
    return CHANNELS.get(account_type)


def capabilities(account_type: str) -> Capabilities | None:
    """The capabilities of an account type; None for a type without channel rules yet."""
    return REGISTRY.get(account_type)
