"""Failed-login limits per username and per client address, in Redis (HUB_REDIS_URL) or in memory."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from hub.errors import TooManyRequests, Unavailable
from hub.settings import Settings


class LoginThrottle:
    """Fixed windows of HUB_LOGIN_WINDOW_S from a counter's first attempt. An attempt is counted
    before its password is checked, so guesses sent in parallel cannot all pass the limit; a
    success takes its attempt back and resets the username's counter.

    Litestar's stores have no atomic increment, which the Redis counter needs (several replicas)."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self._window_s = settings.login_window_s
        self._prefix = f"{settings.redis_key_prefix}login-failures:"
        self._limits = {"user": settings.login_max_failures, "addr": settings.login_max_failures_per_address}
        self._redis = redis
        self._memory: dict[str, tuple[int, float]] = {}

    def _keys(self, username: str, address: str) -> dict[str, str]:
        # Hashed: keys stay short and Redis holds no usernames.
        user = hashlib.sha256(username.encode()).hexdigest()[:32]
        return {"user": f"{self._prefix}user:{user}", "addr": f"{self._prefix}addr:{address}"}

    async def attempt(self, username: str, address: str) -> None:
        """Counts one attempt; TooManyRequests when its username or address is over the limit."""
        counted = {kind: await self._increment(key) for kind, key in self._keys(username, address).items()}
        for kind, (count, ttl_s) in counted.items():
            if count > self._limits[kind]:
                who = "this username" if kind == "user" else "this address"
                raise TooManyRequests(
                    f"too many failed logins for {who}: retry in {ttl_s} s", retry_after_s=ttl_s
                )

    async def succeeded(self, username: str, address: str) -> None:
        keys = self._keys(username, address)
        await self._reset(keys["user"])
        await self._take_back(keys["addr"])

    async def _increment(self, key: str) -> tuple[int, int]:
        if self._redis is None:
            now = time.monotonic()
            count, until = self._memory.get(key, (0, 0.0))
            if until <= now:
                self._forget_expired(now)
                count, until = 0, now + self._window_s
            self._memory[key] = (count + 1, until)
            return count + 1, max(1, math.ceil(until - now))
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(key, 0, ex=self._window_s, nx=True).incr(key).ttl(key)
        with _store_errors():
            _, count, ttl_s = await pipe.execute()
        return int(count), max(1, int(ttl_s))

    async def _reset(self, key: str) -> None:
        if self._redis is None:
            self._memory.pop(key, None)
            return
        with _store_errors():
            await self._redis.delete(key)

    async def _take_back(self, key: str) -> None:
        if self._redis is None:
            count, until = self._memory.get(key, (0, 0.0))
            if count > 0:
                self._memory[key] = (count - 1, until)
            return
        with _store_errors():
            # Only while the window lives: DECR on a missing key would make one without expiry.
            await self._redis.eval(_TAKE_BACK, 1, key)  # type: ignore[misc]

    def _forget_expired(self, now: float) -> None:
        if len(self._memory) > 10_000:
            self._memory = {k: v for k, v in self._memory.items() if v[1] > now}


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise Unavailable("the login limit store is unavailable, retry later") from exc


_TAKE_BACK = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0"
