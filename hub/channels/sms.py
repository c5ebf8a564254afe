"""The SMS channel (Twilio-compatible REST, API 2010-04-01): capabilities, status callbacks.

Limits follow twilio/twilio-oai `spec/json/twilio_api_v2010.json`: `Body` "can be up to 1,600
characters", up to ten `MediaUrl`; the `MessageStatus` values are `message_enum_status`."""

from __future__ import annotations

from urllib.parse import urlencode
from uuid import UUID

from hub.channels import Capabilities

CAPABILITIES = Capabilities(
    name="SMS",
    text_limit=1600,
    max_push_messages=0,
    # MMS takes images, audio, video, vCards, PDFs...; the provider judges the type.
    media_kinds=frozenset({"*"}),
    needs_https_media=False,
    max_medias=10,
)

# The query parameter of our StatusCallback URL naming the hub's message. Twilio signs the full
# URL, query included, so a callback that names a message is as authentic as the rest of it.
MESSAGE_ID_PARAM = "message_id"

# Twilio's message statuses -> the hub's `delivery_status` (queued, sent, delivered,
# undelivered, failed). `receiving`/`received` belong to inbound messages.
DELIVERY_STATUS = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "partially_delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}


def status_callback_url(public_url: str, account_id: UUID | str, message_id: UUID | str) -> str:
    query = urlencode({MESSAGE_ID_PARAM: str(message_id)})
    return f"{public_url}/v1.0/hooks/accounts/{account_id}?{query}"
