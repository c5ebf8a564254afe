"""Customer webhooks: endpoint and signing secrets, the retry schedule, deliveries and replays."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

from hub.db import current_engine, transaction
from hub.errors import BadRequest, NotFound
from hub.netguard import check_webhook_uri
from hub.pagination import fetch_page
from hub.participants import ROUTINGS
from hub.repo import now
from hub.tables import Customer, WebhookDelivery

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATUSES = (PENDING, DELIVERED, FAILED)
METHODS = ("POST", "PUT", "PATCH")


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def retry_delay(
    attempts: int, schedule: tuple[float, ...], retry_after_s: float | None = None
) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones; None once the schedule is spent.

    An endpoint's `Retry-After` moves the next attempt later (never earlier than the schedule says,
    so an endpoint cannot spend the attempts in seconds), up to the schedule's longest delay."""
    if not 1 <= attempts <= len(schedule):
        return None
    delay = schedule[attempts - 1]
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max(schedule)))
    return delay


def retry_after_seconds(value: str | None, stamp: datetime) -> float | None:
    """A `Retry-After` header (delay-seconds or an HTTP date) as seconds from `stamp`; None when
    absent or unreadable."""
    value = (value or "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=stamp.tzinfo)
    return max(0.0, (when - stamp).total_seconds())


async def get_customer(customer_id: UUID) -> dict[str, Any]:
    row = await Customer.select().where(Customer.id == customer_id).first()
    if row is None:
        raise NotFound(f"customer {customer_id} not found")
    return row


CUSTOMER_FIELDS = ("name", "webhook_uri", "webhook_method", "conversation_routing", "inactivity_close_s")


async def configure(
    customer_id: UUID, values: dict[str, Any], allow_private: bool
) -> tuple[dict[str, Any], str | None]:
    """Partial update of name, webhook_uri, webhook_method and the conversation settings
    (`conversation_routing`: contact | address, see hub/participants.py; `inactivity_close_s`).
    Setting either webhook field enables an endpoint that was disabled (410 Gone). Returns the
    customer and, when this call created the signing secret (the first endpoint), that secret:
    the only time it is shown."""
    values = {k: v for k, v in values.items() if k in CUSTOMER_FIELDS}
    if values.get("conversation_routing", ROUTINGS[0]) not in ROUTINGS:
        raise BadRequest(f"conversation_routing must be one of {', '.join(ROUTINGS)}")
    if "webhook_uri" in values or "webhook_method" in values:
        values["webhook_disabled_at"], values["webhook_disabled_reason"] = None, ""
    if values.get("webhook_uri"):
        await check_webhook_uri(values["webhook_uri"], allow_private)
    created_secret = None
    async with transaction(current_engine()):
        current = await get_customer(customer_id)
        if values.get("webhook_uri") and not current["webhook_secret"]:
            created_secret = values["webhook_secret"] = new_secret()
        if values:
            values["tm_update"] = now()
            await Customer.update({getattr(Customer, k): v for k, v in values.items()}).where(
                Customer.id == customer_id
            )
    return await get_customer(customer_id), created_secret


async def rotate_secret(customer_id: UUID, grace_s: int) -> tuple[dict[str, Any], str]:
    """A new signing secret; the old one keeps signing alongside it for `grace_s` seconds."""
    secret = new_secret()
    async with transaction(current_engine()):
        current = await get_customer(customer_id)
        stamp = now()
        keep_previous = grace_s > 0 and bool(current["webhook_secret"])
        await Customer.update(
            {
                Customer.webhook_secret: secret,
                Customer.webhook_secret_previous: current["webhook_secret"] if keep_previous else "",
                Customer.webhook_secret_previous_until: (
                    stamp + timedelta(seconds=grace_s) if keep_previous else None
                ),
                Customer.tm_update: stamp,
            }
        ).where(Customer.id == customer_id)
    return await get_customer(customer_id), secret


async def disable_endpoint(customer_id: UUID, uri: str, reason: str) -> bool:
    """The endpoint at `uri` answered 410 Gone: disable it, and end the customer's pending
    deliveries `failed` with the reason (replayable once the endpoint is enabled again).
    False when it was disabled already or is no longer the customer's endpoint."""
    async with transaction(current_engine()):
        stamp = now()
        disabled = (
            await Customer.update(
                {
                    Customer.webhook_disabled_at: stamp,
                    Customer.webhook_disabled_reason: reason[:1000],
                    Customer.tm_update: stamp,
                }
            )
            .where(
                Customer.id == customer_id,
                Customer.webhook_uri == uri,
                Customer.webhook_disabled_at.is_null(),
            )
            .returning(Customer.id)
        )
        if disabled:
            await WebhookDelivery.update(
                {
                    WebhookDelivery.status: FAILED,
                    WebhookDelivery.last_error: disabled_error(reason)[:1000],
                    WebhookDelivery.next_attempt_at: None,
                    WebhookDelivery.tm_update: stamp,
                }
            ).where(WebhookDelivery.customer_id == customer_id, WebhookDelivery.status == PENDING)
    return bool(disabled)


def disabled_error(reason: str) -> str:
    return f"webhook endpoint disabled ({reason})"


@dataclass(frozen=True)
class Endpoint:
    uri: str
    method: str
    # Every secret that signs right now: the current one first.
    secrets: tuple[str, ...]
    # Why the endpoint is disabled (it answered 410 Gone); "" while it is enabled.
    disabled_reason: str = ""


async def endpoints(customer_ids: list[UUID]) -> dict[UUID, Endpoint]:
    """The configured endpoints among `customer_ids` (customers without one are left out),
    disabled ones included (with their reason)."""
    if not customer_ids:
        return {}
    rows = await Customer.select(
        Customer.id,
        Customer.webhook_uri,
        Customer.webhook_method,
        Customer.webhook_secret,
        Customer.webhook_secret_previous,
        Customer.webhook_secret_previous_until,
        Customer.webhook_disabled_at,
        Customer.webhook_disabled_reason,
    ).where(Customer.id.is_in(list(set(customer_ids))), Customer.webhook_uri != "")
    stamp = now()
    found = {}
    for row in rows:
        signing = [row["webhook_secret"]]
        until: datetime | None = row["webhook_secret_previous_until"]
        if row["webhook_secret_previous"] and until is not None and until > stamp:
            signing.append(row["webhook_secret_previous"])
        found[row["id"]] = Endpoint(
            row["webhook_uri"],
            row["webhook_method"],
            tuple(s for s in signing if s),
            disabled_reason=(row["webhook_disabled_reason"] or "disabled")
            if row["webhook_disabled_at"] is not None
            else "",
        )
    return found


async def list_deliveries(
    customer_id: UUID, event_type: str | None, status: str | None, page_size: int, page_token: str
) -> tuple[list[dict[str, Any]], str]:
    conditions: list[Any] = [WebhookDelivery.customer_id == customer_id]
    if event_type:
        conditions.append(WebhookDelivery.event_type == event_type)
    if status:
        conditions.append(WebhookDelivery.status == status)
    return await fetch_page(WebhookDelivery, conditions, page_size, page_token)


async def get_delivery(customer_id: UUID, delivery_id: UUID) -> dict[str, Any]:
    row = (
        await WebhookDelivery.select()
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.customer_id == customer_id)
        .first()
    )
    if row is None:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    return row


async def replay(customer_id: UUID, delivery_id: UUID) -> dict[str, Any]:
    """Delivers the event again with a fresh schedule (same `webhook-id`, so receivers that already
    have it can tell). Within its conversation it waits behind undelivered earlier events."""
    await get_delivery(customer_id, delivery_id)
    stamp = now()
    await WebhookDelivery.update(
        {
            WebhookDelivery.status: PENDING,
            WebhookDelivery.fresh: True,
            WebhookDelivery.attempts: 0,
            WebhookDelivery.next_attempt_at: stamp,
            WebhookDelivery.tm_update: stamp,
        }
    ).where(WebhookDelivery.id == delivery_id)
    return await get_delivery(customer_id, delivery_id)
