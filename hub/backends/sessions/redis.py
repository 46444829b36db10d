"""Session records on Redis, shared by every instance: a recovering client may come
back to any of them, and the records outlive the instance that wrote them."""
from __future__ import annotations

import msgpack
import redis.asyncio as aioredis

from hub.backends.redis import OnRedis
from hub.backends.sessions.base import SessionRecord, Sessions


class RedisSessions(OnRedis, Sessions):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        self.redis = redis
        self.prefix = prefix


    def _key(self, pid: str) -> str:
        return f"{self.prefix}:session:{pid}"

    async def save(self, pid: str, record: SessionRecord, ttl: float) -> None:
        await self.redis.set(self._key(pid), msgpack.packb(record.to_wire()), px=int(ttl * 1000))

    async def get(self, pid: str) -> SessionRecord | None:
        raw = await self.redis.get(self._key(pid))
        return SessionRecord.from_wire(msgpack.unpackb(raw)) if raw else None

    async def touch(self, pids: list[str], ttl: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.pexpire(self._key(pid), int(ttl * 1000))
            await pipe.execute()

    async def delete(self, pid: str) -> None:
        await self.redis.delete(self._key(pid))

    async def close(self) -> None:
        await self.release_client()
