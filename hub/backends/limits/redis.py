"""Rate limits on Redis, shared by every instance (base.py says what they are).
Keys, one hash slot per limited key (hub/backends/redis.py), so limits spread over
a cluster's nodes: `{prefix:rl:key}:{window number}` (hits), `{prefix:bo:key}:fail`
and `{prefix:bo:key}:lock` (back-off). Without Redis the limits are lifted, not every
request refused: they protect the hub, and an outage must not lock everyone out."""
from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.limits.base import FAILURE_MEMORY, Limits, backoff_seconds, sliding_verdict
from hub.backends.redis import OnRedis, tagged

log = logging.getLogger("hub.state")


class RedisLimits(OnRedis, Limits):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        super().__init__()
        self.redis = redis
        self.prefix = prefix


    async def start(self) -> None:
        self.share_spent()

    async def close(self) -> None:
        await self.stop_sharing()
        await self.release_client()

    async def hit_many(self, hits: dict[str, int], limit: int, window: int) -> dict[str, int]:
        now = time.time()
        bucket = int(now // window)
        try:
            # Not a transaction: the keys are in different slots on a cluster, and
            # each INCRBY answers its own count whatever runs in between.
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, n in hits.items():
                    tag = tagged(self.prefix, f"rl:{key}")
                    pipe.incrby(f"{tag}:{bucket}", n).expire(f"{tag}:{bucket}", 2 * window + 1).get(f"{tag}:{bucket - 1}")
                found = await pipe.execute()
        except RedisError as exc:
            # Limits protect the hub; losing them for the length of an outage is
            # better than refusing every login.
            log.warning("rate limit not counted, Redis unreachable: %s", exc)
            return {}
        return {key: sliding_verdict(now, window, limit, found[3 * i], int(found[3 * i + 2] or 0))
                for i, key in enumerate(hits)}

    async def failed(self, key: str, free: int, cap: int) -> int:
        name = f"{tagged(self.prefix, f'bo:{key}')}:fail"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(name).expire(name, FAILURE_MEMORY).execute()
            lock = backoff_seconds(count, free, cap)
            if lock:
                await self.redis.set(f"{tagged(self.prefix, f'bo:{key}')}:lock", 1, ex=lock)
        except RedisError as exc:
            log.warning("failure of %s not counted, Redis unreachable: %s", key, exc)
            return 0
        return lock

    async def locked(self, key: str) -> int:
        try:
            ms = await self.redis.pttl(f"{tagged(self.prefix, f'bo:{key}')}:lock")
        except RedisError as exc:  # like `hit`: an outage lifts the back-off, not every login
            log.warning("back-off of %s not read, Redis unreachable: %s", key, exc)
            return 0
        return max(0, math.ceil(ms / 1000))

    async def forgive(self, key: str) -> None:
        try:
            tag = tagged(self.prefix, f"bo:{key}")
            await self.redis.delete(f"{tag}:fail", f"{tag}:lock")
        except RedisError as exc:
            log.warning("back-off of %s not cleared, Redis unreachable: %s", key, exc)
