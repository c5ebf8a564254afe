"""The email channel: inbound in Mailgun's inbound-route format, outbound through the account's
SMTP relay.

Inbound (Mailgun "Receiving Messages via HTTP through a forward() action"): a form post,
multipart/form-data with the attachments as files `attachment-1`..`attachment-N`, or urlencoded
without them. Fields: `sender`, `from`, `recipient`, `subject`, `body-plain`, `stripped-text`
(the reply without the quoted history, preferred as the text), `Message-Id`, `In-Reply-To`,
`References`, `attachment-count`, and `timestamp`, `token`, `signature` = hex HMAC-SHA256 of
`timestamp + token` with the account's signing key (`secret`); a timestamp more than 5 minutes
off is refused like a bad signature.

Outbound: one RFC 5322 message (`build_request` returns an `SmtpRequest`, which
activities/providers.py sends with aiosmtplib) from the account's address, with a Message-Id made
from the hub's message id (the same on every attempt), threaded to the peer's last email."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formataddr, formatdate, getaddresses, parseaddr
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import multipart

from hub.addresses import Address
from hub.channels import Ack, Capabilities, HookRequest, InboundMessage, Outgoing, Parsed, Sent
from hub.errors import BadRequest, PayloadTooLarge, Unauthorized
from hub.models import Media
from hub.settings import Settings
from hub.strict import refuse_nul

MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# The text fields of one post together (bodies, headers); Mailgun's own limit is 25 MB a message.
MAX_FIELD_BYTES = 4 * 1024 * 1024
# What the hook reads of one email post at most (413 beyond): the attachments and the fields.
MAX_BODY_BYTES = MAX_ATTACHMENTS * MAX_ATTACHMENT_BYTES + MAX_FIELD_BYTES
TIMESTAMP_WINDOW_S = 300

CAPABILITIES = Capabilities(
    name="Email",
    # An email body has no practical limit; the API's own limit on `text` applies first.
    text_limit=1_000_000,
    max_push_messages=0,
    # Any file can be attached; the hub fetches each media and attaches its bytes.
    media_kinds=frozenset({"*"}),
    needs_https_media=False,
    max_medias=MAX_ATTACHMENTS,
    attaches_media=True,
    max_attachment_bytes=MAX_ATTACHMENT_BYTES,
    threads=True,
)

SIGNATURE_PROBLEM = "bad or missing signature, or a timestamp more than 5 minutes off"
ACK = Ack({})
SECURITY = ("starttls", "tls", "none")

_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def normalize_address(raw: str) -> str:
    """`Alice <Alice@Example.com>` and ` alice@example.com ` are both `alice@example.com`; "" when
    it is not one address."""
    _, address = parseaddr(raw or "")
    address = address.strip().lower()
    return address if _ADDRESS.match(address) and len(address) <= 254 else ""


# --- inbound ---------------------------------------------------------------------------------


@dataclass
class InboundFile:
    """A file of an inbound email, stored by the hub as media `id`."""

    id: uuid.UUID
    content_type: str
    filename: str
    data: bytes


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    attachments: list[InboundFile] = field(default_factory=list)


def _content_type(value: str) -> str:
    kind = (value or "").split(";", 1)[0].strip().lower()
    return kind if _MEDIA_TYPE.match(kind) else "application/octet-stream"


def _text(data: bytes | bytearray, name: str) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"form field {name[:64]!r} is not UTF-8") from exc


def _multipart(body: bytes, boundary: str) -> Form:
    form, fields_size = Form(), 0
    try:
        with multipart.PushMultipartParser(
            boundary, content_length=len(body), max_segment_count=400
        ) as parser:
            segment, chunks, size = None, [], 0
            for event in parser.parse(body):
                if isinstance(event, multipart.MultipartSegment):
                    segment, chunks, size = event, [], 0
                elif event is not None:
                    size += len(event)
                    limit = MAX_ATTACHMENT_BYTES if segment.filename is not None else MAX_FIELD_BYTES
                    if size > limit:
                        what = "an attachment" if segment.filename is not None else "a form field"
                        raise PayloadTooLarge(f"{what} is larger than {limit // (1024 * 1024)} MB")
                    chunks.append(bytes(event))
                else:
                    data = b"".join(chunks)
                    if segment.filename is not None:
                        if len(form.attachments) >= MAX_ATTACHMENTS:
                            raise PayloadTooLarge(f"an email may carry at most {MAX_ATTACHMENTS} attachments")
                        form.attachments.append(
                            InboundFile(
                                id=uuid.uuid4(),
                                content_type=_content_type(segment.content_type or ""),
                                filename=(segment.filename or "")[:255],
                                data=data,
                            )
                        )
                    else:
                        fields_size += len(data)
                        if fields_size > MAX_FIELD_BYTES:
                            raise PayloadTooLarge("the form fields are larger than 4 MB together")
                        form.fields[segment.name] = _text(data, segment.name)
    except multipart.ParserLimitReached as exc:
        raise PayloadTooLarge(f"too many form parts: {exc}") from exc
    except multipart.MultipartError as exc:
        raise BadRequest(f"body is not valid multipart/form-data: {exc}") from exc
    return form


def read_form(request: HookRequest, body: bytes) -> Form:
    """The post's fields and files (parsed once per request: `verify` and `parse` share it)."""
    if "email_form" in request.memo:
        return request.memo["email_form"]
    kind, options = multipart.parse_options_header(request.header("content-type"))
    kind = kind.lower()
    if kind == "multipart/form-data" and options.get("boundary"):
        form = _multipart(body, options["boundary"])
    elif kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest("body must be application/x-www-form-urlencoded") from exc
        form = Form(fields=dict(pairs))
    else:
        raise BadRequest("body must be multipart/form-data or application/x-www-form-urlencoded")
    refuse_nul(form.fields, "form")
    request.memo["email_form"] = form
    return form


def signature(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


def verify(account: dict[str, Any], request: HookRequest, body: bytes, now: float | None = None) -> bool:
    """Mailgun's signature over `timestamp + token`, and a timestamp within 5 minutes of now."""
    if not account["secret"]:
        raise Unauthorized("this account has no signing key (secret); set one to receive email")
    fields = read_form(request, body).fields
    timestamp, token, given = (fields.get(k, "") for k in ("timestamp", "token", "signature"))
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    if age > TIMESTAMP_WINDOW_S or not token or not given:
        return False
    return hmac.compare_digest(signature(account["secret"], timestamp, token), given.lower())


def _field(fields: dict[str, str], name: str) -> str:
    """A header field whatever its case (`Message-Id`, `Message-ID`, `message-id`)."""
    if name in fields:
        return fields[name]
    lowered = name.lower()
    return next((v for k, v in fields.items() if k.lower() == lowered), "")


def _message_id(value: str) -> str:
    value = value.strip()
    found = _MESSAGE_ID.search(value)
    return found.group(0) if found else (f"<{value}>" if value and " " not in value else "")


def _references(value: str) -> str:
    return " ".join(_MESSAGE_ID.findall(value or ""))[-4000:]


@dataclass(frozen=True)
class EmailFacts:
    """The email headers the hub keeps with an inbound message (hub.mail stores them)."""

    peer: str
    subject: str
    message_id: str
    in_reply_to: str
    references: str


def parse(account: dict[str, Any], request: HookRequest, body: bytes, settings: Settings) -> Parsed:
    from hub import mail  # storage of the email's own rows (hub.mail imports hub.tables)

    form = read_form(request, body)
    fields = form.fields
    sender = normalize_address(fields.get("sender", "")) or normalize_address(fields.get("from", ""))
    if not sender:
        raise BadRequest("sender must be an email address")
    message_id = _message_id(_field(fields, "Message-Id"))
    if not message_id or len(message_id) > 255:
        raise BadRequest("Message-Id is required (at most 255 characters)")
    try:
        count = int(fields.get("attachment-count") or 0)
    except ValueError as exc:
        raise BadRequest("attachment-count must be an integer") from exc
    if count > MAX_ATTACHMENTS or len(form.attachments) > MAX_ATTACHMENTS:
        raise PayloadTooLarge(f"an email may carry at most {MAX_ATTACHMENTS} attachments")
    display_name, _ = parseaddr(fields.get("from", ""))
    text = fields["stripped-text"] if "stripped-text" in fields else fields.get("body-plain", "")
    facts = EmailFacts(
        peer=sender,
        subject=fields.get("subject", "")[:998],
        message_id=message_id,
        in_reply_to=_message_id(_field(fields, "In-Reply-To")),
        references=_references(_field(fields, "References")),
    )
    medias = [Media(type=a.content_type, url=media_url(a.id)) for a in form.attachments]
    return Parsed(
        messages=[
            InboundMessage(
                account=account,
                peer=Address(type="email", target=sender),
                self_address=self_address(account),
                provider_message_id=message_id,
                text=text.strip("\r\n"),
                medias=medias,
                peer_display_name=display_name.strip()[:255],
                stored_with=partial(mail.store_inbound_email, facts, form.attachments),
            )
        ]
    )


def media_url(media_id: uuid.UUID | str) -> str:
    """Where the hub serves a stored media (authenticated, tenant-scoped)."""
    return f"/v1.0/media/{media_id}"


def self_address(account: dict[str, Any]) -> Address:
    return Address(type="email", target=account["address"], name=account["name"])


# --- outbound --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpRequest:
    """One message for the account's SMTP relay (activities/providers.py sends it)."""

    host: str
    port: int
    security: str
    username: str
    password: str
    sender: str
    recipients: list[str]
    message: EmailMessage
    message_id: str
    subject: str


def header_message_id(message_id: str, address: str) -> str:
    """The Message-Id of a hub message: the same on every attempt."""
    domain = address.rpartition("@")[2] or "hub.invalid"
    return f"<{uuid.UUID(message_id)}@{domain}>"


def reply_subject(subject: str) -> str:
    subject = " ".join(subject.split())
    if not subject:
        return "Re: your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def build_message(account: dict[str, Any], out: Outgoing, now: float | None = None) -> EmailMessage:
    thread = out.thread or {}
    message = EmailMessage()
    message["From"] = (
        formataddr((account["name"], account["address"])) if account["name"] else account["address"]
    )
    message["To"] = out.to
    # A message written with its own subject (a flow's message_send) keeps it; replies say `Re:`.
    message["Subject"] = " ".join(thread.get("own_subject", "").split()) or reply_subject(
        thread.get("subject", "")
    )
    message["Date"] = formatdate(now, localtime=False)
    message["Message-ID"] = header_message_id(out.message_id, account["address"])
    if in_reply_to := thread.get("in_reply_to", ""):
        message["In-Reply-To"] = in_reply_to
        message["References"] = " ".join([*thread.get("references", "").split(), in_reply_to][-20:])
    message.set_content(out.text or "")
    for item in out.attachments:
        maintype, _, subtype = _content_type(item.content_type).partition("/")
        message.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=item.filename or None)
    return message


def build_request(account: dict[str, Any], out: Outgoing, settings: Settings) -> SmtpRequest:
    message = build_message(account, out)
    return SmtpRequest(
        host=account["smtp_host"],
        port=int(account["smtp_port"] or 0) or default_port(account["smtp_security"]),
        security=account["smtp_security"] or "starttls",
        username=account["smtp_username"],
        password=account["smtp_password"],
        sender=account["address"],
        recipients=[address for _, address in getaddresses([out.to]) if address],
        message=message,
        message_id=str(message["Message-ID"]),
        subject=str(message["Subject"]),
    )


def default_port(security: str) -> int:
    return {"tls": 465, "none": 25}.get(security, 587)


def read_answer(status_code: int, body: Any) -> Sent:
    """SMTP has no provider id: the message's own Message-Id is its id (`body`)."""
    return Sent([str(body)] if body else [], "sent")
