"""Operator presence, shared by every instance.

An operator has any number of consoles (connections), on any instance. Each
console is live while it heartbeats within `timeout` seconds. The operator's
status is the one they chose (online|away, `update`) while at least one console
is live, and stays so for a `grace` period after the last console went away
(disconnected, or stopped heartbeating), so that a page reload does not flap
them; after that they are offline. Choosing `offline` is offline at once.

`MemoryPresence` serves a single instance; `RedisPresence` is shared by all
instances on one Redis. Both pass one contract suite (tests/test_presence.py).
Times are epoch seconds from the instances' clocks, which must roughly agree.
"""
from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from hub.redis_client import redis_client

STATUSES = ("online", "away", "offline")
# Forget an operator (and a console) nobody has heard of for this long.
FORGET_AFTER = 24 * 3600
# An instance not stamped alive for this long is dead (RedisPresence), with its consoles.
INSTANCE_TTL = 5.0

log = logging.getLogger("hub.presence")


@dataclass(frozen=True)
class PresenceRecord:
    operator_id: int
    status: str  # effective status: online | away | offline
    chosen: str  # what the operator chose: online | away | offline
    last_seen: float | None  # last heartbeat, connect or disconnect
    max_active_chats: int | None
    offline_since: float | None  # when the status became offline, if it is
    consoles: int  # live consoles


@dataclass
class _Raw:
    chosen: str = "online"
    chosen_at: float = 0.0
    max_active_chats: int | None = None
    disconnected_at: float = 0.0
    conns: dict[str, float] = field(default_factory=dict)  # console -> last heartbeat
    # Consoles whose instance died -> when it was last alive (RedisPresence).
    lost: dict[str, float] = field(default_factory=dict)
    forgot_at: float = 0.0  # when old consoles were last dropped (MemoryPresence)


class Presence(ABC):
    def __init__(self, *, timeout: float, grace: float) -> None:
        self.timeout = timeout
        self.grace = grace

    def _record(self, operator_id: int, raw: _Raw, now: float) -> PresenceRecord:
        live = [hb for hb in raw.conns.values() if hb >= now - self.timeout]
        # When the last console went away: its disconnect, its heartbeat lapsing, or
        # its instance dying.
        gone_at = max([raw.disconnected_at] + [hb + self.timeout for hb in raw.conns.values()]
                      + list(raw.lost.values()))
        seen = max([raw.disconnected_at, raw.chosen_at] + list(raw.conns.values())
                   + list(raw.lost.values())) or None
        offline_since = None
        if raw.chosen == "offline":
            status, offline_since = "offline", raw.chosen_at
        elif live or now <= gone_at + self.grace:
            status = raw.chosen
        else:
            status, offline_since = "offline", gone_at + self.grace
        return PresenceRecord(operator_id=operator_id, status=status, chosen=raw.chosen, last_seen=seen,
                              max_active_chats=raw.max_active_chats, offline_since=offline_since,
                              consoles=len(live))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @abstractmethod
    async def connect(self, operator_id: int, console: str) -> None:
        """A console of the operator connected (counts as a heartbeat). A connecting
        console brings an operator who chose `offline` back to `online`."""

    @abstractmethod
    async def heartbeat(self, operator_id: int, console: str) -> None:
        """The console is alive (registers it if unknown)."""

    @abstractmethod
    async def disconnect(self, operator_id: int, console: str) -> None:
        """The console went away; the grace period starts if it was the last."""

    @abstractmethod
    async def update(self, operator_id: int, *, status: str | None = None,
                     max_active_chats: int | None = None) -> None:
        """The operator chose a status and/or their chat limit."""

    @abstractmethod
    async def get(self, operator_id: int, now: float | None = None) -> PresenceRecord | None:
        """The operator's presence; None if never seen (or forgotten)."""

    @abstractmethod
    async def all(self, now: float | None = None) -> list[PresenceRecord]:
        """Every operator seen in the last day."""

    async def many(self, ids: list[int], now: float | None = None) -> list[PresenceRecord | None]:
        """`get` of each id, at one moment."""
        now = now or time.time()
        return [await self.get(i, now) for i in ids]

    @abstractmethod
    async def claim_change(self, operator_id: int, status: str) -> bool:
        """Atomically record `status` as the last announced one. True for exactly
        one caller per change, whichever instance it runs on: that caller announces
        it. Never announced counts as `offline`."""

    # Looks due: who to look at again, instead of a sweep over everyone (users'
    # presence: many more than operators).

    @abstractmethod
    async def look_at(self, ids: list[int], at: float) -> None:
        """Ask for a look at these ids' status at `at` (e.g. when a grace period ends).
        A look already asked for happens at the later of the two times: a change and
        its undoing within that time (a reload) are then never announced."""

    @abstractmethod
    async def due(self, now: float | None = None, limit: int = 1000) -> list[int]:
        """The ids whose look is due, each handed to exactly one caller on any
        instance; with them, the ids that had consoles on an instance found dead
        (due when their grace period ends)."""


class MemoryPresence(Presence):
    def __init__(self, *, timeout: float, grace: float) -> None:
        super().__init__(timeout=timeout, grace=grace)
        self._ops: dict[int, _Raw] = {}
        self._announced: dict[int, str] = {}
        self._looks: dict[int, float] = {}

    def _raw(self, operator_id: int) -> _Raw:
        return self._ops.setdefault(operator_id, _Raw())

    def _forget_old(self, raw: _Raw, now: float) -> None:
        # At most once a minute: a user's thousands of sockets (one room of a
        # benchmark) must not cost a scan per connect.
        if now - raw.forgot_at < 60:
            return
        raw.forgot_at = now
        for console, hb in list(raw.conns.items()):
            if hb < now - FORGET_AFTER:
                del raw.conns[console]

    async def connect(self, operator_id: int, console: str) -> None:
        now = time.time()
        raw = self._raw(operator_id)
        self._forget_old(raw, now)
        raw.conns[console] = now
        if raw.chosen == "offline":
            raw.chosen, raw.chosen_at = "online", now

    async def heartbeat(self, operator_id: int, console: str) -> None:
        now = time.time()
        raw = self._raw(operator_id)
        self._forget_old(raw, now)
        raw.conns[console] = now

    async def disconnect(self, operator_id: int, console: str) -> None:
        raw = self._raw(operator_id)
        raw.conns.pop(console, None)
        raw.disconnected_at = time.time()

    async def update(self, operator_id: int, *, status: str | None = None,
                     max_active_chats: int | None = None) -> None:
        raw = self._raw(operator_id)
        if status is not None:
            raw.chosen, raw.chosen_at = status, time.time()
        if max_active_chats is not None:
            raw.max_active_chats = max_active_chats

    async def get(self, operator_id: int, now: float | None = None) -> PresenceRecord | None:
        raw = self._ops.get(operator_id)
        return None if raw is None else self._record(operator_id, raw, now or time.time())

    async def all(self, now: float | None = None) -> list[PresenceRecord]:
        now = now or time.time()
        out = []
        for op, raw in list(self._ops.items()):
            rec = self._record(op, raw, now)
            if (rec.last_seen or 0) < now - FORGET_AFTER:
                del self._ops[op]
                self._announced.pop(op, None)
                continue
            out.append(rec)
        return out

    async def claim_change(self, operator_id: int, status: str) -> bool:
        if self._announced.get(operator_id, "offline") == status:
            return False
        self._announced[operator_id] = status
        return True

    async def look_at(self, ids: list[int], at: float) -> None:
        for i in ids:
            self._looks[i] = max(at, self._looks.get(i, at))

    async def due(self, now: float | None = None, limit: int = 1000) -> list[int]:
        now = now or time.time()
        ready = [i for i, at in self._looks.items() if at <= now][:limit]
        for i in ready:
            del self._looks[i]
        return ready


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


class RedisPresence(Presence):
    """Keys: `{prefix}:presence:ops` (zset operator -> last activity),
    `{prefix}:presence:{op}` (hash: chosen, chosen_at, max, disconnected_at,
    announced), `{prefix}:presence:{op}:conns` (zset console -> last heartbeat) and
    `{prefix}:presence:instances` (zset instance -> when it was last alive).

    A console's id starts with its instance's. Every instance stamps itself alive
    every INSTANCE_TTL / 3 seconds; a console whose instance has not for
    INSTANCE_TTL (SIGKILLed, frozen, cut off from Redis) counts as gone since that
    last stamp, and the grace period runs from there. Without this a killed
    instance's consoles stayed live until their heartbeats lapsed (`timeout`).

    Looks: `{prefix}:presence:due` (zset id -> when) and `{prefix}:presence:on:{instance}`
    (set of the ids with consoles there, scheduled for a look once it is found dead)."""

    def __init__(self, url: str, prefix: str, *, timeout: float, grace: float,
                 instance_id: str | None = None) -> None:
        super().__init__(timeout=timeout, grace=grace)
        self.redis = redis_client(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = f"{prefix}:presence"
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
        if self._alive:
            self._alive.cancel()
            await asyncio.gather(self._alive, return_exceptions=True)
        await self.redis.aclose()

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
            raw = _Raw(chosen=f.get("chosen", "online"), chosen_at=float(f.get("chosen_at", 0)),
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
