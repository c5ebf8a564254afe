"""Request and response bodies at the HTTP edge (msgspec Structs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from msgspec import UNSET, Meta, Struct, UnsetType

from hub.actions import ActionIn
from hub.models import (
    AccountOut,
    ActiveflowOut,
    AgentOut,
    ContactOut,
    ConversationOut,
    CustomerOut,
    FlowOut,
    FlowVersionOut,
    MessageOut,
    ParticipantOut,
    WebhookDeliveryOut,
)

Name = Annotated[str, Meta(max_length=255)]
Detail = Annotated[str, Meta(max_length=4096)]
# Patterns end in `\Z`, the true end of the text (`$` also matches before a final newline in
# Python); the OpenAPI document spells it `$` (api.openapi). No `\s`, `\d`, `\w`: they differ
# between Python and JSON Schema's ECMA regexes. These are the whitespace of both.
WHITESPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Username = Annotated[
    str, Meta(min_length=1, max_length=255, pattern=rf"^[^{WHITESPACE}]+\Z", description="no whitespace")
]
Password = Annotated[str, Meta(min_length=8, max_length=1024)]
Permission = Annotated[
    Literal[0, 32, 64, 96],
    Meta(description="permission bits: 0 plain agent, 32 (0x20) admin, 64 (0x40) manager, 96 both"),
]
Secret = Annotated[str, Meta(max_length=4096)]
# Separators are allowed on input; the stored number is E.164 (see AccountOut). The pattern is
# exactly what hub.addresses.normalize_tel turns into E.164 (a unit test holds them together):
# +CC..., 00CC..., a national number of 10 digits (+1 is added) or 7-15 digits (+ is added).
_SEP = r"[ ().-]*"
_DIGIT = rf"(?:{_SEP}[0-9])"
DIALABLE_PATTERN = (
    rf"^(?:{_SEP}(?:\+{_SEP}[1-9]{_DIGIT}{{6,14}}|0{_SEP}0{_SEP}[1-9]{_DIGIT}{{6,14}}"
    rf"|0{_SEP}[1-9]{_DIGIT}{{8}}|[1-9]{_DIGIT}{{6,14}}){_SEP})?\Z"
)
Number = Annotated[
    str,
    Meta(
        max_length=32,
        pattern=DIALABLE_PATTERN,
        description="sms accounts: the number, stored as E.164 (+14155551234); spaces, dots, dashes and "
        "brackets are dropped, 00 becomes +, a 10-digit national number gets +1; line accounts: empty",
    ),
]


class LoginRequest(Struct):
    username: Annotated[str, Meta(min_length=1, max_length=255)]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class TokenResponse(Struct):
    token: str


class PasswordChange(Struct):
    old_password: Annotated[str, Meta(min_length=1, max_length=1024)]
    new_password: Password


class AgentCreate(Struct, kw_only=True):
    username: Username
    password: Password
    name: Name = ""
    detail: Detail = ""
    permission: Permission = 0


class AgentUpdate(Struct, kw_only=True):
    name: Name | UnsetType = UNSET
    detail: Detail | UnsetType = UNSET
    permission: Permission | UnsetType = UNSET
    password: Password | UnsetType = UNSET


class ContactAddressIn(Struct, kw_only=True):
    type: Literal["tel", "line", "email"]
    target: Annotated[str, Meta(min_length=1, max_length=255)]


class ContactCreate(Struct, kw_only=True):
    name: Name = ""
    detail: Detail = ""
    addresses: Annotated[list[ContactAddressIn], Meta(max_length=50)] = []


class ContactUpdate(Struct, kw_only=True):
    name: Name | UnsetType = UNSET
    detail: Detail | UnsetType = UNSET
    addresses: Annotated[list[ContactAddressIn], Meta(max_length=50)] | UnsetType = UNSET


EmailAddress = Annotated[str, Meta(max_length=254)]
SmtpPort = Annotated[int, Meta(ge=0, le=65535, description="0 = the default of smtp_security (587, 465, 25)")]
SmtpSecurity = Literal["starttls", "tls", "none", ""]


class AccountCreate(Struct, kw_only=True):
    """sms: number, sid, token (auth token). line: secret (channel secret), token (channel access
    token). email: address, secret (inbound signing key), smtp_* (the relay it sends through)."""

    type: Literal["sms", "line", "email"]
    name: Name = ""
    detail: Detail = ""
    number: Number = ""
    sid: Name = ""
    secret: Secret = ""
    token: Secret = ""
    message_flow_id: UUID | None = None
    address: EmailAddress = ""
    smtp_host: Name = ""
    smtp_port: SmtpPort = 0
    smtp_security: SmtpSecurity = ""
    smtp_username: Name = ""
    smtp_password: Secret = ""


class AccountUpdate(Struct, kw_only=True):
    name: Name | UnsetType = UNSET
    detail: Detail | UnsetType = UNSET
    number: Number | UnsetType = UNSET
    sid: Name | UnsetType = UNSET
    secret: Secret | UnsetType = UNSET
    token: Secret | UnsetType = UNSET
    message_flow_id: UUID | None | UnsetType = UNSET
    address: EmailAddress | UnsetType = UNSET
    smtp_host: Name | UnsetType = UNSET
    smtp_port: SmtpPort | UnsetType = UNSET
    smtp_security: SmtpSecurity | UnsetType = UNSET
    smtp_username: Name | UnsetType = UNSET
    smtp_password: Secret | UnsetType = UNSET


Tag = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=50,
        pattern=r"^[A-Za-z0-9_-]+\Z",
        description="1-50 characters of a-z, 0-9, _ and -; stored lowercased",
    ),
]
TagList = Annotated[list[Tag], Meta(max_length=20, description="at most 20 tags (duplicates count once)")]


class ConversationUpdate(Struct, kw_only=True):
    """`owner_type` is derived from `owner_id`; a value sent for it is ignored. `tags` replaces
    the conversation's tags."""

    name: Name | UnsetType = UNSET
    detail: Detail | UnsetType = UNSET
    owner_id: UUID | UnsetType = UNSET
    tags: TagList | UnsetType = UNSET


class TagsAdd(Struct, kw_only=True):
    tags: TagList


class MediaIn(Struct, kw_only=True):
    type: Annotated[str, Meta(max_length=64)] = "image"
    url: Annotated[str, Meta(min_length=1, max_length=2048, pattern=r"^https?://")]


class MessageCreate(Struct, kw_only=True):
    text: Annotated[str, Meta(max_length=5000)] = ""
    medias: Annotated[list[MediaIn], Meta(max_length=10)] = []
    # The participant to send through; omitted: the most recently active one that can carry it.
    participant_id: UUID | None = None


class ParticipantAddressIn(Struct, kw_only=True):
    type: Literal["tel", "line", "email"]
    target: Annotated[str, Meta(min_length=1, max_length=255)]
    target_name: Name = ""


class ParticipantCreate(Struct, kw_only=True):
    """An address reached through one of the customer's accounts (of the address's channel)."""

    account_id: UUID
    address: ParticipantAddressIn


class ParticipantPage(Struct):
    result: list[ParticipantOut]
    next_page_token: str


class AgentPage(Struct):
    result: list[AgentOut]
    next_page_token: str


class ContactPage(Struct):
    result: list[ContactOut]
    next_page_token: str


class AccountPage(Struct):
    result: list[AccountOut]
    next_page_token: str


class ConversationPage(Struct):
    result: list[ConversationOut]
    next_page_token: str


class MessagePage(Struct):
    result: list[MessageOut]
    next_page_token: str


def given(body: Struct) -> dict:
    """The fields a partial-update body actually carries."""
    return {f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not UNSET}


class FlowCreate(Struct, kw_only=True):
    name: Name = ""
    detail: Detail = ""
    actions: Annotated[list[ActionIn], Meta(max_length=500)] = []


class FlowUpdate(Struct, kw_only=True):
    name: Name | UnsetType = UNSET
    detail: Detail | UnsetType = UNSET
    actions: Annotated[list[ActionIn], Meta(max_length=500)] | UnsetType = UNSET


class FlowPage(Struct):
    result: list[FlowOut]
    next_page_token: str


class FlowVersionPage(Struct):
    result: list[FlowVersionOut]
    next_page_token: str


class ActiveflowPage(Struct):
    result: list[ActiveflowOut]
    next_page_token: str


class CustomerUpdate(Struct, kw_only=True):
    """`webhook_uri` "" turns webhooks off; the signing secret is created with the first endpoint."""

    name: Name | UnsetType = UNSET
    webhook_uri: Annotated[str, Meta(max_length=2048)] | UnsetType = UNSET
    webhook_method: Literal["POST", "PUT", "PATCH"] | UnsetType = UNSET
    inactivity_close_s: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=366 * 24 * 3600,
                description="close open conversations with no message in either direction for this "
                "many seconds (0 = never)",
            ),
        ]
        | UnsetType
    ) = UNSET
    # `contact` (default): an address of a contact joins the contact's open conversation;
    # `address`: every (account, address) opens its own conversation.
    conversation_routing: Literal["contact", "address"] | UnsetType = UNSET


class CustomerWithSecret(CustomerOut, kw_only=True):
    """The customer, and its webhook signing secret when this answer created it (shown only once)."""

    webhook_secret: str | UnsetType = UNSET


class WebhookDeliveryPage(Struct):
    result: list[WebhookDeliveryOut]
    next_page_token: str


# Standard base64 with its padding, as protobuf's JSON mapping writes bytes.
Base64 = Annotated[
    str,
    Meta(
        pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z",
        description="standard base64, padded",
    ),
]


class PayloadJSON(Struct, kw_only=True, forbid_unknown_fields=True):
    metadata: dict[str, Base64] = {}
    data: Base64 = ""


class PayloadsJSON(Struct, kw_only=True, forbid_unknown_fields=True):
    """Temporal `Payloads` in protobuf's JSON mapping: the codec server protocol's body."""

    payloads: list[PayloadJSON] = []


class DryRunMessage(Struct, kw_only=True, frozen=True):
    text: Annotated[str, Meta(max_length=5000)] = ""
    channel: Literal["sms", "line", "email"] = "sms"


class DryRunReply(Struct, kw_only=True):
    text: Annotated[str, Meta(max_length=5000)] = ""
    channel: Literal["sms", "line", "email", ""] = ""
    media_urls: Annotated[list[Annotated[str, Meta(max_length=2048)]], Meta(max_length=10)] = []


class FlowTest(Struct, kw_only=True):
    """A dry run: the triggering message, and the replies its waits consume in order (a wait past
    them times out at once). `actions`: test this unsaved document instead (POST /flows/test)."""

    message: DryRunMessage = DryRunMessage()
    replies: Annotated[list[DryRunReply], Meta(max_length=100)] = []


class FlowDocumentTest(FlowTest, kw_only=True):
    actions: Annotated[list[ActionIn], Meta(max_length=500)] = []


class CapturedOut(Struct, kw_only=True):
    action_id: str
    type: Annotated[str, Meta(description="message, http, or the action type (sleep, conversation_close...)")]
    detail: dict[str, Any]


class FlowTestOut(Struct, kw_only=True):
    status: Annotated[str, Meta(description="ended, failed or stopped")]
    reason: str = ""
    executed_actions: list[str]
    captured: Annotated[list[CapturedOut], Meta(description="the first 100 side effects, in order")]
    captured_dropped: Annotated[int, Meta(description="side effects beyond the first 100")] = 0
    variables: dict[str, str]
