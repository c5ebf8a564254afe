"""Activities of activeflows: messages sent by flows, HTTP calls of flows, the final record."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import FlowFinishInput, FlowHttpInput, FlowHttpResult, FlowSendInput, FlowSendResult
from activities.messages import MessageActivities
from hub import activeflows, inbound, metrics, netguard, outbound
from hub.actions import flatten
from hub.conversations import get_conversation
from hub.errors import HubError
from hub.settings import Settings

MAX_ANSWER_BYTES = 256 * 1024


class FlowActivities:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, messages: MessageActivities) -> None:
        self.http = http
        self.settings = settings
        self.messages = messages

    @activity.defn(name="flow_send_message")
    async def send_message(self, data: FlowSendInput) -> FlowSendResult:
        """Stores the flow's outgoing message (once per run step, however often retried) and
        hands it to the provider; provider outages raise, so the workflow's policy retries."""
        customer_id = uuid.UUID(data.customer_id)
        try:
            if data.conversation_id:
                conversation = await get_conversation(customer_id, uuid.UUID(data.conversation_id))
            else:
                conversation = await inbound.room_for_destination(
                    customer_id, uuid.UUID(data.account_id), data.destination
                )
            message, _ = await outbound.create_outgoing(
                customer_id,
                conversation["id"],
                data.text,
                [],
                idempotency_key=f"activeflow:{data.activeflow_id}:{data.step}",
                activeflow_id=uuid.UUID(data.activeflow_id),
                message_id=uuid.UUID(data.message_id) if data.message_id else None,
            )
        except HubError as exc:
            # The conversation or account is gone, the text is empty...: retrying cannot help.
            raise ApplicationError(exc.message, type="FlowActionFailed", non_retryable=True) from exc
        delivered = await self.messages.deliver(message["id"])
        return FlowSendResult(
            message_id=str(message["id"]),
            conversation_id=str(conversation["id"]),
            account_id=str(conversation["account_id"]),
            status=delivered.status,
        )

    @activity.defn(name="flow_http")
    async def http_call(self, data: FlowHttpInput) -> FlowHttpResult:
        """webhook_send and fetch. Any HTTP status is an answer; only transport errors retry.
        Targets on loopback, private or link-local addresses are refused like webhook targets."""
        await self.check_target(data.url)
        response = await self.http.request(
            data.method,
            data.url,
            json=data.body if data.method not in ("GET", "DELETE") else None,
            timeout=data.timeout_ms / 1000,
        )
        variables: dict[str, str] = {}
        if data.answer_prefix:
            content = response.content[:MAX_ANSWER_BYTES]
            try:
                flatten(data.answer_prefix, response.json(), variables)
            except ValueError:
                variables[data.answer_prefix] = content.decode("utf-8", "replace")[:5000]
        return FlowHttpResult(status_code=response.status_code, variables=variables)

    async def check_target(self, url: str) -> None:
        # Checked before connecting (webhook deliveries pin the checked address; flows do not yet).
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            if (literal := netguard.ip_literal(host)) is not None:
                netguard.check_address(literal, self.settings.webhook_allow_private)
            else:
                port = parts.port or (443 if parts.scheme == "https" else 80)
                await netguard.resolve(host, port, self.settings.webhook_allow_private)
        except (netguard.TargetRefused, ValueError) as exc:
            raise ApplicationError(
                f"target refused: {exc}", type="TargetRefused", non_retryable=True
            ) from exc

    @activity.defn(name="flow_finish")
    async def finish(self, data: FlowFinishInput) -> None:
        await activeflows.finish(
            uuid.UUID(data.activeflow_id),
            data.status,
            data.executed,
            data.variables,
            data.current_action_id,
            data.reason,
        )
        metrics.activeflow_end(data.status)
        activity.logger.info(
            "activeflow %s", data.status, extra={"activeflow_id": data.activeflow_id, "outcome": data.status}
        )
