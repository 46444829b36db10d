"""Session records in this process (one instance, no Redis)."""
from __future__ import annotations

import time

from hub.backends.sessions.base import SessionRecord, Sessions


class MemorySessions(Sessions):
    def __init__(self) -> None:
        self._records: dict[str, tuple[float, SessionRecord]] = {}

    async def save(self, pid: str, record: SessionRecord, ttl: float) -> None:
        self._records[pid] = (time.monotonic() + ttl, record)

    async def get(self, pid: str) -> SessionRecord | None:
        found = self._records.get(pid)
        if found is None or found[0] < time.monotonic():
            self._records.pop(pid, None)
            return None
        return found[1]

    async def touch(self, pids: list[str], ttl: float) -> None:
        # Expired records go first (touch runs every third of a window): as on
        # Redis, a touch revives none.
        now = time.monotonic()
        self._records = {k: v for k, v in self._records.items() if v[0] >= now}
        until = now + ttl
        for pid in pids:
            if pid in self._records:
                self._records[pid] = (until, self._records[pid][1])

    async def delete(self, pid: str) -> None:
        self._records.pop(pid, None)
