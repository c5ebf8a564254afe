"""Activities of activeflows: messages sent by flows, HTTP calls of flows, the final record."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import httpx
import msgspec
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inputs import (
    FlowFinishInput,
    FlowHttpInput,
    FlowHttpResult,
    FlowLoadInput,
    FlowPlan,
    FlowSendInput,
    FlowSendResult,
)
from activities.messages import MessageActivities
from activities.webhook_http import check_url_host, guarded_session
from hub import activeflows, dialogues, inbound, metrics, netguard, outbound
from hub.actions import flatten
from hub.db import is_data_error
from hub.errors import HubError
from hub.settings import Settings


class AnswerTooLarge(Exception):
    pass


async def read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body, refused (before anything parses it) when it is larger than `limit`."""
    if (response.content_length or 0) > limit:
        raise AnswerTooLarge(f"the answer is larger than {limit} bytes ({response.content_length})")
    received = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        received += chunk
        if len(received) > limit:
            raise AnswerTooLarge(f"the answer is larger than {limit} bytes")
    return bytes(received)


class FlowActivities:
    def __init__(self, http: httpx.AsyncClient, settings: Settings, messages: MessageActivities) -> None:
        self.http = http
        self.settings = settings
        self.messages = messages
        self._session: aiohttp.ClientSession | None = None

    @activity.defn(name="flow_load")
    async def load(self, data: FlowLoadInput) -> FlowPlan:
        """The run's actions (of the version it started with) and variables, validated here so a
        malformed stored action fails the run with a reason instead of the workflow task."""
        try:
            row, actions = await activeflows.run_plan(uuid.UUID(data.activeflow_id), data.flow_version)
            variables = activeflows.stored_variables(row)
        except HubError as exc:
            raise ApplicationError(exc.message, type="FlowInvalid", non_retryable=True) from exc
        return FlowPlan(
            customer_id=str(row["customer_id"]),
            flow_id=str(row["flow_id"]),
            conversation_id=str(row["conversation_id"]),
            account_id=str(row["account_id"]),
            actions=actions,
            variables=variables,
            workflow_id=str(row["workflow_id"]),
        )

    @activity.defn(name="flow_send_message")
    async def send_message(self, data: FlowSendInput) -> FlowSendResult:
        """Stores the flow's outgoing message (once per run step, however often retried) and
        hands it to the provider; provider outages and lost connections raise, so the workflow's
        policy retries; data the database refuses ends the action."""
        try:
            return await self.store_and_deliver(data)
        except Exception as exc:
            if is_data_error(exc):
                raise ApplicationError(
                    f"the message was refused: {type(exc).__name__}: {exc}",
                    type="FlowActionFailed",
                    non_retryable=True,
                ) from exc
            raise

    async def store_and_deliver(self, data: FlowSendInput) -> FlowSendResult:
        customer_id = uuid.UUID(data.customer_id)
        try:
            # conversation_send: the participant outbound selection picks; message_send: the
            # destination's own participant. create_outgoing reads (and scopes) the conversation.
            participant_id = None
            if data.conversation_id:
                conversation_id = uuid.UUID(data.conversation_id)
            else:
                room = await inbound.room_for_destination(
                    customer_id, uuid.UUID(data.account_id), data.destination
                )
                conversation_id, participant_id = room.conversation["id"], room.participant["id"]
            message, _ = await outbound.create_outgoing(
                customer_id,
                conversation_id,
                data.text,
                [],
                idempotency_key=f"activeflow:{data.activeflow_id}:{data.step}",
                activeflow_id=uuid.UUID(data.activeflow_id),
                message_id=uuid.UUID(data.message_id) if data.message_id else None,
                participant_id=participant_id,
                email_subject=data.subject,
            )
        except HubError as exc:
            # The conversation or account is gone, the text is empty...: retrying cannot help.
            raise ApplicationError(exc.message, type="FlowActionFailed", non_retryable=True) from exc
        delivered = await self.messages.deliver(message["id"])
        return FlowSendResult(
            message_id=str(message["id"]),
            conversation_id=str(conversation_id),
            account_id=str(message["account_id"]),
            status=delivered.status,
        )

    @activity.defn(name="flow_http")
    async def http_call(self, data: FlowHttpInput) -> FlowHttpResult:
        """webhook_send and fetch. Any HTTP status is an answer; only transport errors retry.
        Targets on loopback, private or link-local addresses are refused like webhook targets,
        at the address the connection is made to (a DNS answer cannot change after the check)."""
        allow_private = self.settings.webhook_allow_private
        limit = self.settings.flow_http_max_answer_bytes
        try:
            netguard.check_literal_target(data.url, allow_private)
            check_url_host(data.url, allow_private)
            async with asyncio.timeout(data.timeout_ms / 1000):
                async with self._http().request(
                    data.method,
                    data.url,
                    json=data.body if data.method not in ("GET", "DELETE") else None,
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    content = await read_capped(response, limit) if data.answer_prefix else b""
        except (netguard.TargetRefused, ValueError) as exc:
            raise ApplicationError(
                f"target refused: {exc}", type="TargetRefused", non_retryable=True
            ) from exc
        except AnswerTooLarge as exc:
            raise ApplicationError(str(exc), type="AnswerTooLarge", non_retryable=True) from exc
        variables: dict[str, str] = {}
        if data.answer_prefix:
            try:
                flatten(data.answer_prefix, msgspec.json.decode(content), variables)
            except msgspec.DecodeError:
                variables[data.answer_prefix] = content.decode("utf-8", "replace")[:5000]
        return FlowHttpResult(status_code=status, variables=variables)

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, in the worker's event loop; the guard pins the checked addresses.
        if self._session is None or self._session.closed:
            self._session = guarded_session(self.settings.webhook_allow_private)
        return self._session

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
        # Out of dialogue: what its waits never took is marked unconsumed and starts nothing.
        await dialogues.end(uuid.UUID(data.activeflow_id))
        metrics.activeflow_end(data.status)
        activity.logger.info(
            "activeflow %s", data.status, extra={"activeflow_id": data.activeflow_id, "outcome": data.status}
        )
