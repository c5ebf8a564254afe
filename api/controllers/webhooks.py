"""/v1.0/customer (the webhook endpoint and its signing secret) and /v1.0/webhook_deliveries."""

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import CustomerUpdate, CustomerWithSecret, WebhookDeliveryPage, given
from hub import webhooks
from hub.events import EVENT_TYPES
from hub.models import CustomerOut, WebhookDeliveryOut
from hub.settings import Settings

EventTypeFilter = Annotated[
    Literal[EVENT_TYPES] | None,  # type: ignore[valid-type]
    QueryParameter(name="event_type", description="Only deliveries of this event type"),
]
StatusFilter = Annotated[
    Literal["pending", "delivered", "failed"] | None,
    QueryParameter(name="status", description="pending (waiting or retrying), delivered or failed"),
]


def customer_out(row: dict, secret: str | None = None) -> CustomerWithSecret:
    out = msgspec.convert(row, CustomerOut, strict=False)
    with_secret = CustomerWithSecret(**msgspec.structs.asdict(out))
    if secret is not None:
        with_secret.webhook_secret = secret
    return with_secret


def delivery_out(row: dict) -> WebhookDeliveryOut:
    return msgspec.convert(row, WebhookDeliveryOut, strict=False)


class CustomerController(Controller):
    path = "/v1.0/customer"
    tags = ["customer"]

    @get("/", summary="The caller's customer, with its webhook endpoint (never the secret)")
    async def get_customer(self, caller: NamedDependency[Caller]) -> CustomerOut:
        return msgspec.convert(await webhooks.get_customer(caller.customer_id), CustomerOut, strict=False)

    @put(
        "/",
        summary="Set the webhook endpoint (admin/manager)",
        description="Partial update. The first endpoint creates the Standard Webhooks signing secret, "
        "returned once as `webhook_secret` in this answer and never again. The target must not "
        "resolve to a loopback, private or link-local address. Setting `webhook_uri` or "
        "`webhook_method` enables an endpoint that was disabled because it answered 410 Gone.",
    )
    async def update_customer(
        self, request: Request, caller: NamedDependency[Caller], data: JSONBody[CustomerUpdate]
    ) -> CustomerWithSecret:
        caller.require_admin_or_manager()
        settings: Settings = request.app.state.settings
        row, secret = await webhooks.configure(
            caller.customer_id, given(data), allow_private=settings.webhook_allow_private
        )
        return customer_out(row, secret)

    @post(
        "/webhook_secret/rotate",
        status_code=200,
        summary="Replace the webhook signing secret (admin/manager); the answer shows the new one once",
        description="Deliveries are signed with both the new and the previous secret for a grace "
        "period (HUB_WEBHOOK_SECRET_GRACE_S, a day by default), so receivers can switch without loss.",
    )
    async def rotate_secret(self, request: Request, caller: NamedDependency[Caller]) -> CustomerWithSecret:
        caller.require_admin_or_manager()
        settings: Settings = request.app.state.settings
        row, secret = await webhooks.rotate_secret(caller.customer_id, settings.webhook_secret_grace_s)
        return customer_out(row, secret)


class WebhookDeliveryController(Controller):
    path = "/v1.0/webhook_deliveries"
    tags = ["webhooks"]

    @get("/", summary="Webhook deliveries, newest first (admin/manager)")
    async def list_deliveries(
        self,
        caller: NamedDependency[Caller],
        event_type: EventTypeFilter = None,
        status: StatusFilter = None,
        page_size: PageSize = 100,
        page_token: PageToken = "",
    ) -> WebhookDeliveryPage:
        caller.require_admin_or_manager()
        rows, token = await webhooks.list_deliveries(
            caller.customer_id, event_type, status, page_size, page_token
        )
        return WebhookDeliveryPage(result=[delivery_out(r) for r in rows], next_page_token=token)

    @get("/{delivery_id:str}", summary="One webhook delivery (admin/manager)")
    async def get_delivery(
        self, caller: NamedDependency[Caller], delivery_id: FromPath[UUID]
    ) -> WebhookDeliveryOut:
        caller.require_admin_or_manager()
        return delivery_out(await webhooks.get_delivery(caller.customer_id, delivery_id))

    @post(
        "/{delivery_id:str}/replay",
        status_code=200,
        summary="Deliver the event again (admin/manager)",
        description="The delivery becomes pending with a fresh retry schedule and the same "
        "`webhook-id`; within its conversation it still waits for earlier undelivered events.",
    )
    async def replay(
        self, caller: NamedDependency[Caller], delivery_id: FromPath[UUID]
    ) -> WebhookDeliveryOut:
        caller.require_admin_or_manager()
        return delivery_out(await webhooks.replay(caller.customer_id, delivery_id))
