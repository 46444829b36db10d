"""Revoked tokens on Redis, shared by every instance (base.py says what this is).
Keys: `{prefix}:revoked:{jti}`, expiring with the token."""
from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hub.backends.redis import OnRedis
from hub.backends.revocations.base import RevokedTokens

log = logging.getLogger("hub.state")


class RedisRevokedTokens(OnRedis, RevokedTokens):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        super().__init__()
        self.redis = redis
        self.prefix = prefix


    async def close(self) -> None:
        await self.release_client()

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
