"""Litestar channels for the live event stream: Redis pub/sub when HUB_REDIS_URL is set (events reach
every API replica), else in memory, fed by the relay running in this same process (`hub run`)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Iterable

from litestar.channels import ChannelsPlugin, Subscriber
from litestar.channels.backends.base import ChannelsBackend
from litestar.channels.backends.memory import MemoryChannelsBackend
from redis.asyncio import Redis
from redis.exceptions import RedisError

from activities.publish import attach_local, detach_local
from hub.settings import Settings

# Events a slow client may fall behind by before its stream is closed; it then reconnects with
# Last-Event-ID and catches up from the outbox, so closing loses nothing.
MAX_BACKLOG = 2000
# Sent to every stream when live events may have been lost: the stream ends, the client resumes.
RESUME = b""

log = logging.getLogger("hub.stream")


class StreamSubscriber(Subscriber):
    """A subscriber that notices when it overflowed, and can wait for an event with a timeout."""

    overflowed = False

    def put_nowait(self, item: bytes | None) -> bool:
        accepted = super().put_nowait(item)
        if not accepted:
            self.overflowed = True
        return accepted

    def drain(self) -> None:
        """Empties the queue, so unsubscribing (which enqueues a stop marker) cannot block."""
        while not self._queue.empty():
            self._queue.get_nowait()

    async def next_event(self, timeout_s: float) -> bytes | None:
        """The next event, or None when none came within `timeout_s`."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except TimeoutError:
            return None


class LocalChannelsBackend(MemoryChannelsBackend):
    """The in-memory backend, reachable by the relay of this process while the app runs."""

    async def on_startup(self) -> None:
        await super().on_startup()
        attach_local(self)

    async def on_shutdown(self) -> None:
        detach_local(self)
        await super().on_shutdown()


class RedisBackend(ChannelsBackend):
    """Redis pub/sub channels that survive a lost connection. redis-py reconnects and subscribes
    again by itself, but what was published in between is gone for this replica: every stream is
    then told (RESUME) to end, and its client resumes from the outbox with Last-Event-ID."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._has_channels: asyncio.Event | None = None
        self._lost = False
        self._watched: object | None = None

    async def on_startup(self) -> None:
        self._has_channels = asyncio.Event()

    async def on_shutdown(self) -> None:
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        for channel in channels:
            await self._redis.publish(channel, data)

    async def subscribe(self, channels: Iterable[str]) -> None:
        await self._pubsub.subscribe(*channels)
        connection = self._pubsub.connection
        if connection is not None and connection is not self._watched:
            # Called on every later (re)connect of this connection: a gap in what we received.
            connection.register_connect_callback(self._reconnected)
            self._watched = connection
        assert self._has_channels is not None
        self._has_channels.set()

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        await self._pubsub.unsubscribe(*channels)
        if not self._live_channels() and self._has_channels is not None:
            self._has_channels.clear()

    def _live_channels(self) -> set[str]:
        pending = self._pubsub.pending_unsubscribe_channels
        return {c.decode() for c in self._pubsub.channels if c not in pending}

    async def _reconnected(self, _connection) -> None:
        self._lost = True

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        assert self._has_channels is not None
        while True:
            await self._has_channels.wait()
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("live events: Redis connection lost (%s); streams resume from the outbox", exc)
                self._lost = True
                await asyncio.sleep(1)
                message = None
            if self._lost:
                self._lost = False
                for channel in self._live_channels():
                    yield channel, RESUME
            if message is not None:
                channel = message["channel"].decode()
                if channel in self._live_channels():
                    yield channel, message["data"]

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        raise NotImplementedError("the live stream keeps no history; the outbox does")


def channels_plugin(settings: Settings) -> ChannelsPlugin:
    backend: ChannelsBackend
    if settings.redis_url:
        # Named after the process, so operators (and tests) can tell whose subscription it is.
        backend = RedisBackend(Redis.from_url(settings.redis_url, client_name=f"hub-api-{os.getpid()}"))
    else:
        backend = LocalChannelsBackend()
    return ChannelsPlugin(
        backend=backend,
        arbitrary_channels_allowed=True,
        subscriber_max_backlog=MAX_BACKLOG,
        subscriber_backlog_strategy="backoff",
        subscriber_class=StreamSubscriber,
    )
