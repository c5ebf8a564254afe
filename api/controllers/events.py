"""GET /v1.0/events: the live event stream (Server-Sent Events), resumable with Last-Event-ID."""

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, cast

import anyio
import msgspec
from litestar import Controller, get
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from redis.exceptions import RedisError

from api.deps import Caller
from api.stream import RESUME, StreamSubscriber
from hub import events
from hub.errors import BadRequest, Unavailable

log = logging.getLogger("hub.api")

# A comment line this often keeps proxies from closing a quiet stream.
KEEPALIVE_S = 15.0
BACKLOG_PAGE = 500
# A client far behind gets this many outbox events per connection, then reconnects from there.
MAX_BACKLOG = 10_000
RECONNECT_MS = 1000

# Event ids are the outbox's serial column (a 32-bit integer on PostgreSQL).
MAX_SEQ = 2**31 - 1
# 0 to MAX_SEQ in ASCII digits (`str.isdigit` takes "²", which `int` refuses), or empty.
EVENT_ID_PATTERN = (
    r"^(?:0*(?:[0-9]{1,9}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}"
    r"|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7]))?\Z"
)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)

LastEventId = Annotated[
    str | None,
    HeaderParameter(
        name="Last-Event-ID",
        required=False,
        max_length=20,
        pattern=EVENT_ID_PATTERN,
        description="The `id` of the last event received: the stream resumes after it from the outbox",
    ),
]


def _resume_point(last_event_id: str | None) -> int | None:
    value = (last_event_id or "").strip()
    if not _EVENT_ID.match(value):
        raise BadRequest("Last-Event-ID must be the id (a non-negative integer) of an event of this stream")
    return int(value) if value else None


def _message(seq: int, event_type: str, data: str | bytes, stamp: datetime | None) -> ServerSentEventMessage:
    return ServerSentEventMessage(id=seq, event=event_type, data=events.payload(event_type, data, stamp))


async def _stream(
    channels: ChannelsPlugin, subscriber: StreamSubscriber, caller: Caller, after: int | None
) -> AsyncIterator[ServerSentEventMessage]:
    sees_all = caller.is_admin_or_manager
    # The backlog is read after subscribing, so an event can come both ways: sent once.
    from_backlog: set[int] = set()
    try:
        yield ServerSentEventMessage(data=None, retry=RECONNECT_MS, comment="hub events")
        if after is not None:
            owner = None if sees_all else caller.agent_id
            cursor = after
            while True:
                rows = await events.list_events(caller.customer_id, cursor, BACKLOG_PAGE, owner)
                for row in rows:
                    from_backlog.add(row["seq"])
                    yield _message(row["seq"], row["type"], row["data"], row["tm_create"])
                if len(rows) < BACKLOG_PAGE:
                    break
                if len(from_backlog) >= MAX_BACKLOG:
                    return
                cursor = rows[-1]["seq"]
        while True:
            raw = await subscriber.next_event(KEEPALIVE_S)
            if subscriber.overflowed or raw == RESUME:
                return  # too slow to follow, or live events were lost: resume from the outbox
            if raw is None:
                yield ServerSentEventMessage(data=None, comment="keepalive")
                continue
            event = msgspec.json.decode(raw, type=events.StreamEvent)
            if event.seq in from_backlog or not events.visible_to(event, caller.agent_id, sees_all):
                continue
            yield _message(event.seq, event.type, bytes(event.data), event.tm_create)
    finally:
        subscriber.drain()
        # The client is gone and its scope cancelled; unsubscribing must still complete.
        with anyio.CancelScope(shield=True):
            try:
                await channels.unsubscribe(subscriber)
            except RedisError as exc:  # Redis is gone; its subscription went with it
                log.info("unsubscribing a closed stream failed: %s", exc)


class EventStreamController(Controller):
    path = "/v1.0/events"
    tags = ["events"]

    @get(
        "/",
        summary="Live events (Server-Sent Events)",
        description=(
            "Every event of the caller's customer as it happens; agents without admin/manager "
            "permission get the events of conversations they own. Each message has `id` (the event "
            'sequence number), `event` (its type) and `data` `{"type", "timestamp", "data"}`, the webhook '
            "body. An agent also gets the `conversation_updated` that takes a conversation away from it. "
            "Reconnecting with `Last-Event-ID` replays what was missed from the outbox."
        ),
    )
    async def stream_events(
        self,
        caller: NamedDependency[Caller],
        channels: NamedDependency[ChannelsPlugin],
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        after = _resume_point(last_event_id)
        try:
            subscriber = await channels.subscribe(events.channel_for(caller.customer_id))
        except RedisError as exc:
            raise Unavailable("the live event stream is unavailable, retry later") from exc
        return ServerSentEvent(_stream(channels, cast(StreamSubscriber, subscriber), caller, after))
