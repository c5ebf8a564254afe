"""Publishes relayed events to live-stream subscribers: through Redis to every API replica, or,
without Redis (the embedded `hub run`), to the API apps running in this very process."""

from __future__ import annotations

import logging
from typing import Any, Protocol

import msgspec
from redis.asyncio import Redis

from hub.events import channel_for, stream_event

log = logging.getLogger("hub.publish")


class LocalChannels(Protocol):
    async def publish(self, data: bytes, channels: Any) -> None: ...


# In-memory channel backends of the API apps of this process; they attach on startup.
_local: set[LocalChannels] = set()


def attach_local(backend: LocalChannels) -> None:
    _local.add(backend)


def detach_local(backend: LocalChannels) -> None:
    _local.discard(backend)


class EventPublisher:
    def __init__(self, redis_url: str) -> None:
        # Connects on first use, so a worker starts (and delivers webhooks) while Redis is down.
        self._redis = Redis.from_url(redis_url) if redis_url else None
        if self._redis is None:
            log.info("HUB_REDIS_URL is unset: live events reach only API servers in this process")

    async def publish(self, rows: list[dict[str, Any]]) -> None:
        """One message per event on its customer's channel, in the order given."""
        messages = [(channel_for(r["customer_id"]), msgspec.json.encode(stream_event(r))) for r in rows]
        if self._redis is not None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for channel, data in messages:
                    pipe.publish(channel, data)
                await pipe.execute()
            return
        for backend in list(_local):
            for channel, data in messages:
                await backend.publish(data, [channel])

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
