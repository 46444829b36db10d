"""Revoked tokens on Redis, shared by every instance (base.py says what this is).
Keys: `{prefix}:revoked:{jti}`, expiring with the token."""
from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.redis import client_for
from hub.backends.revocations.base import RevokedTokens

log = logging.getLogger("hub.state")


class RedisRevokedTokens(RevokedTokens):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        super().__init__()
        self.redis = redis
        self.prefix = prefix
        self._owns_redis = False

    @classmethod
    def from_url(cls, url: str, prefix: str) -> "RedisRevokedTokens":
        """A store with a client of its own, closed with it (tools, tests)."""
        store = cls(client_for(url), prefix)
        store._owns_redis = True
        return store

    async def close(self) -> None:
        if self._owns_redis:
            await self.redis.aclose()

    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember(jti, ttl)
        await self.redis.set(f"{self.prefix}:revoked:{jti}", 1, ex=max(ttl, 1))

    async def is_revoked(self, jti: str) -> bool:
        if self.known(jti):
            return True
        try:
            return bool(await self.redis.exists(f"{self.prefix}:revoked:{jti}"))
        except RedisError as exc:
            log.warning("revocation check fell back to this instance's memory: %s", exc)
            return False
