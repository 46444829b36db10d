"""Rate limits in one process (base.py says what they are)."""
from __future__ import annotations

import math
import time

from hub.backends.limits.base import FAILURE_MEMORY, Limits, WindowCounts, backoff_seconds


class MemoryLimits(Limits):
    def __init__(self) -> None:
        super().__init__()
        self._hits = WindowCounts()
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (count, time of the last)
        self._locks: dict[str, float] = {}  # key -> locked until

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
