"""Rate limits on Redis, shared by every instance (base.py says what they are).
Keys: `{prefix}:rl:{key}:{window number}` (hits), `{prefix}:fail:{key}` and
`{prefix}:lock:{key}` (back-off). Without Redis the limits are lifted, not every
request refused: they protect the hub, and an outage must not lock everyone out."""
from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.limits.base import FAILURE_MEMORY, Limits, backoff_seconds, sliding_verdict
from hub.backends.redis import shared_client

log = logging.getLogger("hub.state")


class RedisLimits(Limits):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        super().__init__()
        self.redis = redis
        self.prefix = prefix
        self._owns_redis = False

    @classmethod
    def from_url(cls, url: str, prefix: str) -> "RedisLimits":
        """Limits with a client of their own, closed with them (tools, tests)."""
        limits = cls(shared_client(url), prefix)
        limits._owns_redis = True
        return limits

    async def start(self) -> None:
        self.share_spent()

    async def close(self) -> None:
        await self.stop_sharing()
        if self._owns_redis:
            await self.redis.aclose()

    async def hit_many(self, hits: dict[str, int], limit: int, window: int) -> dict[str, int]:
        now = time.time()
        bucket = int(now // window)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for key, n in hits.items():
                    name = f"{self.prefix}:rl:{key}:{bucket}"
                    pipe.incrby(name, n).expire(name, 2 * window + 1).get(f"{self.prefix}:rl:{key}:{bucket - 1}")
                found = await pipe.execute()
        except RedisError as exc:
            # Limits protect the hub; losing them for the length of an outage is
            # better than refusing every login.
            log.warning("rate limit not counted, Redis unreachable: %s", exc)
            return {}
        return {key: sliding_verdict(now, window, limit, found[3 * i], int(found[3 * i + 2] or 0))
                for i, key in enumerate(hits)}

    async def failed(self, key: str, free: int, cap: int) -> int:
        name = f"{self.prefix}:fail:{key}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(name).expire(name, FAILURE_MEMORY).execute()
            lock = backoff_seconds(count, free, cap)
            if lock:
                await self.redis.set(f"{self.prefix}:lock:{key}", 1, ex=lock)
        except RedisError as exc:
            log.warning("failure of %s not counted, Redis unreachable: %s", key, exc)
            return 0
        return lock

    async def locked(self, key: str) -> int:
        try:
            ms = await self.redis.pttl(f"{self.prefix}:lock:{key}")
        except RedisError as exc:  # like `hit`: an outage lifts the back-off, not every login
            log.warning("back-off of %s not read, Redis unreachable: %s", key, exc)
            return 0
        return max(0, math.ceil(ms / 1000))

    async def forgive(self, key: str) -> None:
        try:
            await self.redis.delete(f"{self.prefix}:fail:{key}", f"{self.prefix}:lock:{key}")
        except RedisError as exc:
            log.warning("back-off of %s not cleared, Redis unreachable: %s", key, exc)
