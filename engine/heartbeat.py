"""The pings and pong deadlines of every session of an Engine.IO server, on one timer."""
from __future__ import annotations

import asyncio
import heapq
import itertools


class Heartbeat:
    """The pings and pong deadlines of all sessions of a server on one loop timer:
    a heap of (when, seq, socket, stamp) entries, the timer armed for the earliest.
    A task and a timer per session (python-engineio, and this module before) cost
    ~1 KiB per idle connection. An entry that no longer applies (the session
    answered, or closed) is dropped when it comes due."""

    def __init__(self) -> None:
        self._heap: list = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = float("inf")

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, socket, stamp) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), socket, stamp))
        if when < self._armed:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = asyncio.get_running_loop().call_at(when, self._run)

    def _run(self) -> None:
        self._timer, self._armed = None, float("inf")
        heap = self._heap
        # Timers may fire up to a clock tick early; what is due within 1 ms runs now.
        now = asyncio.get_running_loop().time() + 0.001
        while heap and heap[0][0] <= now:
            _, _, socket, stamp = heapq.heappop(heap)
            try:
                socket._heartbeat(stamp)
            except Exception:  # pragma: no cover - one session must not stop the others
                socket.server.logger.exception("heartbeat of %s failed", socket.sid)
        if heap:
            self._arm(heap[0][0])

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed, self._heap = None, float("inf"), []

