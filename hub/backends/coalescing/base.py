"""Coalescing, the same on every instance: "at most once per interval, trailing
change never lost" (used for the SNS analytics and trending recomputations,
docs/sns.md).

`throttle(group, key, s)` records that `key` changed and returns True when the
caller should act now (nobody acted on `key` in the last `s` seconds, on any
instance); otherwise the key stays pending. `due(group, s)` returns the pending
keys whose interval has passed, each claimed for the caller (and no longer
pending). A caller that acts reads the current data *after* the claim, so every
change recorded before it is reflected; a later change is pending again.

`MemoryCoalescing` (memory.py) serves a single instance; `RedisCoalescing`
(redis.py) is shared by all instances on one Redis. Both pass one contract suite
(tests/backends/test_coalescing.py)."""
from __future__ import annotations

from abc import ABC, abstractmethod


class Coalescing(ABC):
    async def close(self) -> None:
        pass

    @abstractmethod
    async def throttle(self, group: str, key: str, interval: float) -> bool: ...

    @abstractmethod
    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]: ...
