"""Presence in one process (base.py says what it is)."""
from __future__ import annotations

import time

from hub.backends.presence.base import FORGET_AFTER, Presence, PresenceRecord, RawPresence


class MemoryPresence(Presence):
    def __init__(self, *, timeout: float, grace: float) -> None:
        super().__init__(timeout=timeout, grace=grace)
        self._ops: dict[int, RawPresence] = {}
        self._announced: dict[int, str] = {}
        self._looks: dict[int, float] = {}

    def _raw(self, operator_id: int) -> RawPresence:
        return self._ops.setdefault(operator_id, RawPresence())

    def _forget_old(self, raw: RawPresence, now: float) -> None:
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
