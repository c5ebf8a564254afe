"""Activities that deliver outgoing messages through the providers and record the outcome."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import httpx
import msgspec
from temporalio import activity

from activities import providers
from activities.inputs import DeliverInput, DeliverResult, FailInput
from activities.providers import Outgoing, ProviderRejected, ProviderUnavailable
from activities.webhook_http import guarded_session
from hub import channels, mail, metrics, outbound
from hub.settings import Settings

# Once the provider has the message, a retry of the whole activity would send it again: keep
# trying to record the outcome here first (about 30 s), and only then give up to Temporal.
RECORD_DELAYS_S = (0.2, 0.5, 1, 2, 4, 8, 15)


async def record_outcome(
    message_id: uuid.UUID,
    status: str,
    provider_message_id: str = "",
    reason: str = "",
    provider_ids: list[str] | None = None,
    delivery_status: str = "",
):
    for delay in (*RECORD_DELAYS_S, None):
        try:
            return await outbound.finish_delivery(
                message_id,
                status,
                provider_message_id,
                reason,
                provider_message_ids=provider_ids,
                delivery_status=delivery_status,
            )
        except Exception as exc:
            if delay is None:
                raise
            activity.logger.warning("recording %s of %s failed (%s); retrying", status, message_id, exc)
            await asyncio.sleep(delay)


class MessageActivities:
    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _media_session(self) -> aiohttp.ClientSession:
        """Fetches customer-given media URLs (email attachments) through the address guard;
        made on first use, in the worker's event loop."""
        if self._session is None or self._session.closed:
            timeout = self.settings.provider_timeout_s
            self._session = guarded_session(self.settings.webhook_allow_private, timeout)
        return self._session

    @activity.defn(name="deliver_message")
    async def deliver_message(self, data: DeliverInput) -> DeliverResult:
        return await self.deliver(uuid.UUID(data.message_id))

    async def deliver(self, message_id: uuid.UUID) -> DeliverResult:
        """One attempt to hand the message to its provider. 4xx settles it `failed`; 5xx and
        timeouts raise so Temporal retries under the calling workflow's policy."""
        delivery = await outbound.load_delivery(message_id)
        if delivery is None:
            return DeliverResult(status="missing")
        message, account = delivery.message, delivery.account
        if message["status"] != outbound.PROGRESSING:
            # A retry after the outcome was recorded: nothing to send again.
            return DeliverResult(status=message["status"], reason=message["reason"])
        # The participant the message was recorded for: its address and our side of it.
        out = Outgoing(
            message_id=str(message_id),
            to=delivery.to,
            sender=delivery.sender or account["number"],
            text=message["text"],
            medias=msgspec.json.decode(message["medias"] or "[]"),
        )
        channel = channels.channel(account["type"])
        caps = channel.CAPABILITIES
        try:
            if caps.threads:
                out.thread = await mail.thread_for(message["conversation_id"], out.to)
                if subject := await mail.own_subject(message_id):
                    out.thread["own_subject"] = subject
            if caps.attaches_media and out.medias:
                out.attachments = await providers.fetch_attachments(
                    self._media_session(),
                    message["customer_id"],
                    out.medias,
                    self.settings.resolved_public_url,
                    caps.max_attachment_bytes,
                    self.settings.webhook_allow_private,
                )
            built = channel.build_request(account, out, self.settings)
            sent = await providers.send(
                self.http,
                channel,
                built,
                timeout_s=self.settings.provider_timeout_s,
                allow_private=self.settings.webhook_allow_private,
            )
        except ProviderRejected as exc:
            metrics.outbound(account["type"], "failed")
            await record_outcome(message_id, outbound.FAILED, reason=str(exc), provider_ids=exc.provider_ids)
            return DeliverResult(status=outbound.FAILED, reason=str(exc))
        except ProviderUnavailable as exc:
            metrics.outbound(account["type"], "retried")
            activity.logger.warning(
                "send %s attempt %s: %s",
                message_id,
                activity.info().attempt,
                exc,
                extra={"message_id": str(message_id), "outcome": "retried", "channel": account["type"]},
            )
            raise
        metrics.outbound(account["type"], "done")
        activity.logger.info(
            "message handed to the provider",
            extra={
                "message_id": str(message_id),
                "conversation_id": str(message["conversation_id"]),
                "customer_id": str(message["customer_id"]),
                "channel": account["type"],
                "outcome": "done",
            },
        )
        await record_outcome(
            message_id, outbound.DONE, provider_ids=sent.provider_ids, delivery_status=sent.delivery_status
        )
        if caps.threads:
            try:
                await mail.record_sent_email(
                    message_id, out.to, built.subject, out.thread or {}, built.message_id
                )
            except Exception as exc:  # the message went out: a retry must not send it again
                activity.logger.warning("email headers of %s not recorded: %s", message_id, exc)
        first = sent.provider_ids[0] if sent.provider_ids else ""
        return DeliverResult(status=outbound.DONE, provider_message_id=first)

    @activity.defn(name="fail_message")
    async def fail_message(self, data: FailInput) -> None:
        await outbound.finish_delivery(uuid.UUID(data.message_id), outbound.FAILED, reason=data.reason)
