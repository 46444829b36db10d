"""Coalescing in one process (base.py says what it is)."""
from __future__ import annotations

import time

from hub.backends.coalescing.base import Coalescing


class MemoryCoalescing(Coalescing):
    def __init__(self) -> None:
        self._claims: dict[str, float] = {}  # "group:key" -> monotonic expiry
        self._pending: dict[str, dict[str, None]] = {}

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
