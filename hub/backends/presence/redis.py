"""Presence on Redis, shared by every instance (base.py says what it is)."""
from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from engine import cancel_and_wait
from hub.backends.presence.base import FORGET_AFTER, INSTANCE_TTL, Presence, PresenceRecord, RawPresence
from hub.backends.redis import OnRedis, tagged

log = logging.getLogger("hub.presence")


# Set the announced status unless it already is that; 1 when changed.
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], 'announced')
if not cur then cur = 'offline' end
if cur == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'announced', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


# Take the due looks (at most ARGV[2]) off the schedule: each goes to one caller.
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
"""

# A dead instance's ids, once: scheduled for a look at ARGV[1], and forgotten there.
_REAP = """
local ids = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[2], ARGV[1], id) end
return #ids
"""


class RedisPresence(OnRedis, Presence):
    """Keys (`{P}` below is the hash tag `{prefix:presence}`): `{P}:ops` (zset operator -> last activity),
    `{P}:{op}` (hash: chosen, chosen_at, max, disconnected_at,
    announced), `{P}:{op}:conns` (zset console -> last heartbeat) and
    `{P}:instances` (zset instance -> when it was last alive).

    A console's id starts with its instance's. Every instance stamps itself alive
    every INSTANCE_TTL / 3 seconds; a console whose instance has not for
    INSTANCE_TTL (SIGKILLed, frozen, cut off from Redis) counts as gone since that
    last stamp, and the grace period runs from there. Without this a killed
    instance's consoles stayed live until their heartbeats lapsed (`timeout`).

    Looks: `{P}:due` (zset id -> when) and `{P}:on:{instance}`
    (set of the ids with consoles there, scheduled for a look once it is found dead)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, *, timeout: float, grace: float,
                 instance_id: str | None = None) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        super().__init__(timeout=timeout, grace=grace)
        self.redis = redis
        # Every key of one presence in one hash slot (hub/backends/redis.py): its
        # transactions and scripts span the operator's keys, the index of
        # operators and the schedule of looks.
        self.prefix = tagged(prefix, "presence")
        self.instance_id = instance_id
        self._claim = self.redis.register_script(_CLAIM)
        self._due = self.redis.register_script(_DUE)
        self._reap = self.redis.register_script(_REAP)
        self._alive: asyncio.Task | None = None


    async def start(self) -> None:
        if self.instance_id:
            self._alive = asyncio.create_task(self._stamp_forever(), name="presence-instance-alive")

    async def _stamp_forever(self) -> None:
        key = f"{self.prefix}:instances"
        while True:
            now = time.time()
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.zadd(key, {self.instance_id: now})
                    pipe.zremrangebyscore(key, "-inf", now - FORGET_AFTER)
                    pipe.expire(key, FORGET_AFTER)
                    await pipe.execute()
            except Exception as exc:  # unreachable: its consoles will count as lost meanwhile
                log.warning("could not stamp this instance alive in presence: %s", exc)
            await asyncio.sleep(INSTANCE_TTL / 3)

    async def close(self) -> None:
        await cancel_and_wait(self._alive)
        await self.release_client()

    def _key(self, operator_id: int) -> str:
        return f"{self.prefix}:{operator_id}"

    async def _touch(self, operator_id: int, console: str, *, connecting: bool) -> None:
        now = time.time()
        key = self._key(operator_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(f"{key}:conns", {console: now})
            pipe.zremrangebyscore(f"{key}:conns", "-inf", now - FORGET_AFTER)
            pipe.zadd(f"{self.prefix}:ops", {str(operator_id): now})
            pipe.expire(f"{key}:conns", FORGET_AFTER)
            pipe.expire(key, FORGET_AFTER)
            instance, _, rest = console.partition(":")
            if rest:
                pipe.sadd(f"{self.prefix}:on:{instance}", str(operator_id))
                pipe.expire(f"{self.prefix}:on:{instance}", FORGET_AFTER)
            pipe.hget(key, "chosen")
            result = await pipe.execute()
        if connecting and result[-1] == b"offline":
            await self.redis.hset(key, mapping={"chosen": "online", "chosen_at": now})

    async def connect(self, operator_id: int, console: str) -> None:
        await self._touch(operator_id, console, connecting=True)

    async def heartbeat(self, operator_id: int, console: str) -> None:
        await self._touch(operator_id, console, connecting=False)

    async def disconnect(self, operator_id: int, console: str) -> None:
        now = time.time()
        key = self._key(operator_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(f"{key}:conns", console)
            pipe.hset(key, "disconnected_at", now)
            pipe.zadd(f"{self.prefix}:ops", {str(operator_id): now})
            pipe.expire(key, FORGET_AFTER)
            await pipe.execute()

    async def update(self, operator_id: int, *, status: str | None = None,
                     max_active_chats: int | None = None) -> None:
        now = time.time()
        fields: dict = {}
        if status is not None:
            fields.update(chosen=status, chosen_at=now)
        if max_active_chats is not None:
            fields["max"] = max_active_chats
        if not fields:
            return
        key = self._key(operator_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.zadd(f"{self.prefix}:ops", {str(operator_id): now})
            pipe.expire(key, FORGET_AFTER)
            await pipe.execute()

    async def _records(self, ids: list[int], now: float) -> list[PresenceRecord | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(f"{self.prefix}:instances", 0, -1, withscores=True)
            for op in ids:
                pipe.hgetall(self._key(op))
                pipe.zrange(f"{self._key(op)}:conns", 0, -1, withscores=True)
            instances, *result = await pipe.execute()
        # Instances not heard of for INSTANCE_TTL -> when they last were.
        dead = {i.decode(): at for i, at in instances if at < now - INSTANCE_TTL}
        out: list[PresenceRecord | None] = []
        for i, op in enumerate(ids):
            fields, conns = result[2 * i], result[2 * i + 1]
            if not fields and not conns:
                out.append(None)
                continue
            f = {k.decode(): v.decode() for k, v in fields.items()}
            raw = RawPresence(chosen=f.get("chosen", "online"), chosen_at=float(f.get("chosen_at", 0)),
                       max_active_chats=int(f["max"]) if "max" in f else None,
                       disconnected_at=float(f.get("disconnected_at", 0)))
            for c, hb in conns:
                console = c.decode()
                died = dead.get(console.partition(":")[0])
                if died is None:
                    raw.conns[console] = hb
                else:
                    raw.lost[console] = min(hb + self.timeout, died)
            out.append(self._record(op, raw, now))
        return out

    async def get(self, operator_id: int, now: float | None = None) -> PresenceRecord | None:
        return (await self._records([operator_id], now or time.time()))[0]

    async def many(self, ids: list[int], now: float | None = None) -> list[PresenceRecord | None]:
        return await self._records(ids, now or time.time()) if ids else []

    async def all(self, now: float | None = None) -> list[PresenceRecord]:
        now = now or time.time()
        await self.redis.zremrangebyscore(f"{self.prefix}:ops", "-inf", now - FORGET_AFTER)
        ids = [int(m) for m in await self.redis.zrange(f"{self.prefix}:ops", 0, -1)]
        return [r for r in await self._records(ids, now) if r is not None]

    async def claim_change(self, operator_id: int, status: str) -> bool:
        return bool(await self._claim(keys=[self._key(operator_id)], args=[status, FORGET_AFTER]))

    async def look_at(self, ids: list[int], at: float) -> None:
        if ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zadd(f"{self.prefix}:due", {str(i): at for i in ids}, gt=True)
                pipe.expire(f"{self.prefix}:due", FORGET_AFTER)
                await pipe.execute()

    async def due(self, now: float | None = None, limit: int = 1000) -> list[int]:
        now = now or time.time()
        dead = await self.redis.zrangebyscore(f"{self.prefix}:instances", now - FORGET_AFTER,
                                              now - INSTANCE_TTL, withscores=True)
        for instance, died in dead:
            await self._reap(keys=[f"{self.prefix}:on:{instance.decode()}", f"{self.prefix}:due"],
                             args=[died + self.grace])
        return [int(i) for i in await self._due(keys=[f"{self.prefix}:due"], args=[now, limit])]
