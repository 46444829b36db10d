"""Facts that never change once written, cached per database so that hot paths
(sending a message, typing) skip the queries that would read them again.

Only what the hub never updates or deletes belongs here: a chat thread's kind,
title and members (no operation changes them), a direct thread's id for a pair of
users. A miss costs the query it replaces; the cache is bounded."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable

CAPACITY = 100_000


class Facts:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = capacity

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
