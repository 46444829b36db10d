"""State every instance must agree on: token revocations and rate-limit counters.

`MemoryState` serves a single instance; `RedisState` is shared by all instances
on one Redis. Both pass the same contract suite (tests/test_backends.py)."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod

from redis.exceptions import RedisError

from handlers.context import Actor
from handlers.errors import RateLimited
from hub.redis_client import redis_client

log = logging.getLogger("hub.state")


def sliding_verdict(now: float, window: int, limit: int, current: int, previous: int) -> int:
    """0 if the estimated hits of the last `window` seconds are within `limit`,
    else the whole seconds until enough of the previous window has slid out."""
    elapsed = now % window
    if current + previous * (1 - elapsed / window) <= limit:
        return 0
    if current > limit or previous == 0:
        return max(1, int(window - elapsed + 0.999))
    # Wait until previous * (1 - t / window) <= limit - current.
    t = window * (1 - (limit - current) / previous)
    return max(1, int(t - elapsed + 0.999))


# Failures of one key (an account's logins) are forgotten after this long without one.
FAILURE_MEMORY = 3600


def backoff_seconds(failures: int, free: int, cap: int) -> int:
    """The lock after the `failures`-th failure in a row: none for the first `free - 1`,
    then 1 s, doubling with each further failure, up to `cap`."""
    if failures < free:
        return 0
    return min(cap, 2 ** min(failures - free, 30))
def spend_operation(state: "SharedState", settings, actor: Actor) -> None:
    """Count one operation of `actor` (over a socket or HTTP) against its budget, the
    same over all its sockets, HTTP requests and instances; RateLimited when spent."""
    who = actor.id if actor.id is not None else (actor.visitor_id or actor.name or actor.jti)
    retry = state.spend(f"ops:{actor.role}:{who}", settings.user_op_limit, settings.user_op_window)
    if retry:
        raise RateLimited(f"too many operations; retry in {retry}s", retry_after=retry)


class WindowCounts:
    """Hits per key in fixed windows (the current one and the one before), in memory."""

    def __init__(self) -> None:
        self._hits: dict[str, dict[int, int]] = {}

    def add(self, key: str, n: int, limit: int, window: int, now: float) -> int:
        """Count `n` hits of `key`; the seconds to wait (0: within `limit`)."""
        bucket = int(now // window)
        counts = self._hits.get(key, {})
        counts = {b: c for b, c in counts.items() if b >= bucket - 1}
        counts[bucket] = counts.get(bucket, 0) + n
        self._hits[key] = counts
        if len(self._hits) > 100000:
            self._hits = {k: v for k, v in self._hits.items() if max(v) >= bucket - 1}
        return sliding_verdict(now, window, limit, counts[bucket], counts.get(bucket - 1, 0))


# Seconds between two additions of this instance's `spend` hits to the shared counters.
SPEND_FLUSH = 0.5


class SharedState(ABC):
    def __init__(self) -> None:
        # Revocations this instance has seen (its own and those heard on the bus):
        # answers stay right for them while Redis is unreachable.
        self._revoked: dict[str, float] = {}
        self._spent = WindowCounts()  # `spend` hits on this instance
        self._unshared: dict[tuple[str, int, int], int] = {}  # ... not yet added to the shared counters
        self._blocked: dict[str, float] = {}  # key -> until when the shared counters refuse it
        self._flusher: asyncio.Task | None = None

    def spend(self, key: str, limit: int, window: int) -> int:
        """`hit` for the hot path (every operation of a user): no I/O. Counted here at
        once, exactly for this instance, and added to the counters every instance
        shares within SPEND_FLUSH seconds; a key over the limit there is refused on
        every instance from then on. So on several instances a key may get past the
        limit by what one flush interval lets through, never by more."""
        now = time.time()
        until = self._blocked.get(key)
        if until is not None:
            if until > now:
                return math.ceil(until - now)
            del self._blocked[key]
        retry = self._spent.add(key, 1, limit, window, now)
        if not retry and self._flusher is not None:
            pending = (key, limit, window)
            self._unshared[pending] = self._unshared.get(pending, 0) + 1
        return retry

    async def _share_spent(self) -> None:
        while True:
            await asyncio.sleep(SPEND_FLUSH)
            pending, self._unshared = self._unshared, {}
            groups: dict[tuple[int, int], dict[str, int]] = {}
            for (key, limit, window), n in pending.items():
                groups.setdefault((limit, window), {})[key] = n
            now = time.time()
            self._blocked = {k: t for k, t in self._blocked.items() if t > now}
            for (limit, window), hits in groups.items():
                for key, retry in (await self.hit_many(hits, limit, window)).items():
                    if retry:
                        self._blocked[key] = now + retry

    def share_spent(self) -> None:
        """Start adding `spend` hits to the shared counters (instances that share them)."""
        self._flusher = asyncio.create_task(self._share_spent(), name="rate-limit-share")

    async def stop_sharing(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None

    def remember_revoked(self, jti: str, ttl: int) -> None:
        now = time.time()
        self._revoked[jti] = now + ttl
        if len(self._revoked) > 10000:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}

    def known_revoked(self, jti: str) -> bool:
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

    async def hit(self, key: str, limit: int, window: int) -> int:
        """Count one hit of `key`; return 0 when the hits of the last `window`
        seconds are within `limit`, else the seconds to wait.

        A sliding window, estimated from two fixed ones (the current count plus
        the previous one weighted by how much of it still overlaps), so a burst
        cannot get twice the limit through by straddling a boundary."""
        return (await self.hit_many({key: 1}, limit, window)).get(key, 0)

    @abstractmethod
    async def hit_many(self, hits: dict[str, int], limit: int, window: int) -> dict[str, int]:
        """`hit` for several keys at once, each counted as many times as given."""

    # Back-off of one key (failed logins of one account, from any address, on any
    # instance): `failed` counts a failure and locks the key for `backoff_seconds`;
    # `locked` says for how many more seconds it is locked; `forgive` clears it.

    @abstractmethod
    async def failed(self, key: str, free: int, cap: int) -> int: ...

    @abstractmethod
    async def locked(self, key: str) -> int: ...

    @abstractmethod
    async def forgive(self, key: str) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the backend is unreachable."""

    # Coalescing ("at most once per interval, trailing change never lost"):
    # `throttle(group, key, s)` records that `key` changed and returns True when the
    # caller should act now (nobody acted on `key` in the last `s` seconds, on any
    # instance); otherwise the key stays pending. `due(group, s)` returns the pending
    # keys whose interval has passed, each claimed for the caller (and no longer
    # pending). A caller that acts reads the current data *after* the claim, so every
    # change recorded before it is reflected; a later change is pending again.

    @abstractmethod
    async def throttle(self, group: str, key: str, interval: float) -> bool: ...

    @abstractmethod
    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]: ...


class MemoryState(SharedState):
    def __init__(self) -> None:
        super().__init__()
        self._hits = WindowCounts()
        self._claims: dict[str, float] = {}  # "group:key" -> monotonic expiry
        self._pending: dict[str, dict[str, None]] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, time of the last)
        self._locks: dict[str, float] = {}  # key -> locked until

    def _claim(self, name: str, interval: float) -> bool:
        now = time.monotonic()
        if self._claims.get(name, 0) > now:
            return False
        self._claims[name] = now + interval
        if len(self._claims) > 100000:
            self._claims = {k: v for k, v in self._claims.items() if v > now}
        return True

    async def throttle(self, group: str, key: str, interval: float) -> bool:
        if self._claim(f"{group}:{key}", interval):
            self._pending.get(group, {}).pop(key, None)
            return True
        self._pending.setdefault(group, {})[key] = None
        return False

    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]:
        pending = self._pending.get(group, {})
        out = []
        for key in list(pending)[: max(limit, 0) * 10]:
            if len(out) >= limit:
                break
            if self._claim(f"{group}:{key}", interval):
                del pending[key]
                out.append(key)
        return out

    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember_revoked(jti, ttl)

    async def is_revoked(self, jti: str) -> bool:
        return self.known_revoked(jti)

    async def hit_many(self, hits: dict[str, int], limit: int, window: int) -> dict[str, int]:
        now = time.time()
        return {key: self._hits.add(key, n, limit, window, now) for key, n in hits.items()}

    async def failed(self, key: str, free: int, cap: int) -> int:
        now = time.time()
        count, last = self._failures.get(key, (0, now))
        count = count + 1 if now - last < FAILURE_MEMORY else 1
        self._failures[key] = (count, now)
        lock = backoff_seconds(count, free, cap)
        if lock:
            self._locks[key] = now + lock
        if len(self._failures) > 100000:
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < FAILURE_MEMORY}
            self._locks = {k: v for k, v in self._locks.items() if v > now}
        return lock

    async def locked(self, key: str) -> int:
        return max(0, math.ceil(self._locks.get(key, 0) - time.time()))

    async def forgive(self, key: str) -> None:
        self._failures.pop(key, None)
        self._locks.pop(key, None)

    async def ping(self) -> None:
        pass


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


class RedisState(SharedState):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.redis = redis_client(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._throttle = self.redis.register_script(_THROTTLE)
        self._due = self.redis.register_script(_DUE)

    async def throttle(self, group: str, key: str, interval: float) -> bool:
        ms = max(int(interval * 1000), 1)
        keys = [f"{self.prefix}:claim:{group}:{key}", f"{self.prefix}:pending:{group}"]
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
            found = await self._due(keys=[f"{self.prefix}:pending:{group}"],
                                    args=[f"{self.prefix}:claim:{group}:", ms, limit])
        except RedisError as exc:
            log.warning("pending %s not read, Redis unreachable: %s", group, exc)
            return []
        return [m.decode() if isinstance(m, bytes) else m for m in found]

    async def start(self) -> None:
        self.share_spent()

    async def close(self) -> None:
        await self.stop_sharing()
        await self.redis.aclose()

    async def revoke(self, jti: str, ttl: int) -> None:
        self.remember_revoked(jti, ttl)
        await self.redis.set(f"{self.prefix}:revoked:{jti}", 1, ex=max(ttl, 1))

    async def is_revoked(self, jti: str) -> bool:
        if self.known_revoked(jti):
            return True
        try:
            return bool(await self.redis.exists(f"{self.prefix}:revoked:{jti}"))
        except RedisError as exc:
            log.warning("revocation check fell back to this instance's memory: %s", exc)
            return False

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

    async def ping(self) -> None:
        await self.redis.ping()
