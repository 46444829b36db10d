"""Rate limits every instance must agree on: request counters (`hit`), each
actor's operation budget (`spend`, `spend_operation`) and the login back-off
(`failed`, `locked`, `forgive`).

`MemoryLimits` (memory.py) serves a single instance; `RedisLimits` (redis.py) is
shared by all instances on one Redis. Both pass one contract suite
(tests/backends/test_limits.py)."""
from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from typing import Protocol

from engine import cancel_and_wait
from handlers.context import Actor
from handlers.errors import RateLimited


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


class Spends(Protocol):
    def spend(self, key: str, limit: int, window: int) -> int: ...


def spend_operation(limits: Spends, settings, actor: Actor) -> None:
    """Count one operation of `actor` (over a socket or HTTP) against its budget, the
    same over all its sockets, HTTP requests and instances; RateLimited when spent."""
    who = actor.id if actor.id is not None else (actor.visitor_id or actor.name or actor.jti)
    retry = limits.spend(f"ops:{actor.role}:{who}", settings.user_op_limit, settings.user_op_window)
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


class Limits(ABC):
    def __init__(self) -> None:
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
            await cancel_and_wait(self._flusher)
            self._flusher = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

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
