"""Coalescing on Redis, shared by every instance (base.py says what it is).
Keys, one hash slot per group (`{G}` is the hash tag `{prefix:coalesce:group}`, see
hub/backends/redis.py): `{G}:claim:{key}` (a claim, expiring after its interval)
and `{G}:pending` (the set of pending keys). `due` claims keys it reads from the
pending set, so it names them inside its script: the tag keeps them in the slot
of the key it declares, which Redis Cluster requires."""
from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.coalescing.base import Coalescing
from hub.backends.redis import OnRedis, tagged

log = logging.getLogger("hub.state")

# KEYS[1] the claim key, KEYS[2] the group's pending set; ARGV[1] member, ARGV[2] ms.
_THROTTLE = """
if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[2]) then
  redis.call('SREM', KEYS[2], ARGV[1])
  return 1
end
redis.call('SADD', KEYS[2], ARGV[1])
return 0
"""

# KEYS[1] the group's pending set; ARGV[1] claim key prefix, ARGV[2] ms, ARGV[3] limit.
_DUE = """
local out = {}
local members = redis.call('SRANDMEMBER', KEYS[1], tonumber(ARGV[3]) * 10)
for _, m in ipairs(members) do
  if #out >= tonumber(ARGV[3]) then break end
  if redis.call('SET', ARGV[1] .. m, 1, 'NX', 'PX', ARGV[2]) then
    redis.call('SREM', KEYS[1], m)
    table.insert(out, m)
  end
end
return out
"""


class RedisCoalescing(OnRedis, Coalescing):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        self.redis = redis
        self.prefix = prefix
        self._throttle = self.redis.register_script(_THROTTLE)
        self._due = self.redis.register_script(_DUE)


    async def close(self) -> None:
        await self.release_client()

    async def throttle(self, group: str, key: str, interval: float) -> bool:
        ms = max(int(interval * 1000), 1)
        group_tag = tagged(self.prefix, f"coalesce:{group}")
        keys = [f"{group_tag}:claim:{key}", f"{group_tag}:pending"]
        try:
            return bool(await self._throttle(keys=keys, args=[key, ms]))
        except RedisError as exc:
            # Without Redis the instances cannot agree: act (more often than the
            # interval, for the length of the outage) rather than lose the change.
            log.warning("throttle %s fell back to acting now, Redis unreachable: %s", group, exc)
            return True

    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]:
        ms = max(int(interval * 1000), 1)
        try:
            group_tag = tagged(self.prefix, f"coalesce:{group}")
            found = await self._due(keys=[f"{group_tag}:pending"], args=[f"{group_tag}:claim:", ms, limit])
        except RedisError as exc:
            log.warning("pending %s not read, Redis unreachable: %s", group, exc)
            return []
        return [m.decode() if isinstance(m, bytes) else m for m in found]
