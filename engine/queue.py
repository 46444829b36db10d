"""The send queue of an Engine.IO session (python-engineio's `create_queue` hook)."""
from __future__ import annotations

import asyncio


class PacketQueue:
    """The send queue of a session: what python-engineio uses of asyncio.Queue
    (put/get/task_done/join/empty), for one consumer at a time, at a fraction of the
    memory: asyncio.Queue holds four deques (~3 KiB per idle connection); this holds
    a list, and futures only while someone waits.

    `on_put`, when set, is called after each put: a websocket that writes without a
    task (engine.websocket.LeanWebSocket) is told that there is something to write."""

    __slots__ = ("_items", "_getters", "_unfinished", "_joiners", "on_put")

    def __init__(self) -> None:
        self._items: list = []
        self._getters: list | None = None
        self._joiners: list | None = None
        self._unfinished = 0
        self.on_put = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item) -> None:
        self._items.append(item)
        self._unfinished += 1
        getters = self._getters
        if getters:
            self._getters = None
            for fut in getters:
                if not fut.done():
                    fut.set_result(None)
        if self.on_put is not None:
            self.on_put()

    async def put(self, item) -> None:
        self.put_nowait(item)

    def get_nowait(self):
        if not self._items:
            raise asyncio.QueueEmpty()
        return self._items.pop(0)

    async def get(self):
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(fut)
            try:
                await fut
            finally:
                if self._getters and fut in self._getters:
                    self._getters.remove(fut)
        return self._items.pop(0)

    def take_all(self) -> list:
        """Everything queued, at once (counted as done)."""
        items, self._items = self._items, []
        self._unfinished -= len(items)
        if self._unfinished <= 0:
            self._unfinished = 0
            self._release_joiners()
        return items

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            self._release_joiners()

    def _release_joiners(self) -> None:
        joiners, self._joiners = self._joiners, None
        for fut in joiners or ():
            if not fut.done():
                fut.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            fut = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(fut)
            await fut

