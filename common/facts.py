"""Facts that never change once written, cached per database so that hot paths
(sending a message, typing) skip the queries that would read them again.

Only what the hub never updates or deletes belongs here: a chat thread's kind,
title and members (no operation changes them), a direct thread's id for a pair of
users. A miss costs the query it replaces, once however many ask at the same
time; the cache is bounded."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Hashable

CAPACITY = 100_000


class Facts:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = capacity
        self._reads: dict[Hashable, asyncio.Task] = {}  # misses being read, by key

    def get(self, key: Hashable) -> Any:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)

    async def load(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value of `key`, or else what `read()` returns (it caches it).
        Concurrent misses of one key share one read: its value, or its exception,
        goes to all of them. A caller that is cancelled does not cancel the read."""
        value = self.get(key)
        if value is not None:
            return value
        task = self._reads.get(key)
        if task is None:
            task = self._reads[key] = asyncio.ensure_future(read())
            task.add_done_callback(lambda done: self._read_done(key, done))
        return await asyncio.shield(task)

    def _read_done(self, key: Hashable, task: asyncio.Task) -> None:
        self._reads.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have been cancelled
