"""State every instance must agree on: token revocations and rate-limit counters.

`MemoryState` serves a single instance; `RedisState` is shared by all instances
on one Redis. Both pass the same contract suite (tests/test_backends.py)."""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("hub.state")


class SharedState(ABC):
    def __init__(self) -> None:
        # Revocations this instance has seen (its own and those heard on the bus):
        # answers stay right for them while Redis is unreachable.
        self._revoked: dict[str, float] = {}

    def remember_revoked(self, jti: str, ttl: int) -> None:
        now = time.time()
        self._revoked[jti] = now + ttl
        if len(self._revoked) > 10000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    def _known_revoked(self, jti: str) -> bool:
        return self._revoked.get(jti, 0) > time.time()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @abstractmethod
    async def revoke(self, jti: str, ttl: int) -> None:
        """Remember for `ttl` seconds that the token `jti` is revoked."""

    @abstractmethod
    async def is_revoked(self, jti: str) -> bool: ...

    @abstractmethod
    async def hit(self, key: str, limit: int, window: int) -> int:
        """Count one hit of `key` in the current `window`-second window; return 0
        when within `limit`, else the seconds until the window ends."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend is unreachable."""


class MemoryState(SharedState):
    def __init__(self) -> None:
        super().__init__()
        self._hits: dict[str, tuple[int, int]] = {}

    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember_revoked(jti, ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self._known_revoked(jti)

    async def hit(self, key: str, limit: int, window: int) -> int:
        now = int(time.time())
        bucket = now // window
        seen_bucket, count = self._hits.get(key, (bucket, 0))
        count = count + 1 if seen_bucket == bucket else 1
        self._hits[key] = (bucket, count)
        if len(self._hits) > 100000:
            self._hits = {k: v for k, v in self._hits.items() if v[0] == bucket}
        return 0 if count <= limit else (bucket + 1) * window - now

    async def ping(self) -> None:
        pass


class RedisState(SharedState):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    async def close(self) -> None:
        await self.redis.aclose()

    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember_revoked(jti, ttl)
        await self.redis.set(f"{self.prefix}:revoked:{jti}", 1, ex=max(ttl, 1))

    async def is_revoked(self, jti: str) -> bool:
        if self._known_revoked(jti):
            return True
        try:
            return bool(await self.redis.exists(f"{self.prefix}:revoked:{jti}"))
        except RedisError as exc:
            log.warning("revocation check fell back to this instance's memory: %s", exc)
            return False

    async def hit(self, key: str, limit: int, window: int) -> int:
        now = int(time.time())
        bucket = now // window
        name = f"{self.prefix}:rl:{key}:{bucket}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(name).expire(name, window + 1).execute()
        except RedisError as exc:
            # Limits protect the hub; losing them for the length of an outage is
            # better than refusing every login.
            log.warning("rate limit not counted, Redis unreachable: %s", exc)
            return 0
        return 0 if count <= limit else (bucket + 1) * window - now

    async def ping(self) -> None:
        await self.redis.ping()
