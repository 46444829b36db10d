"""The background tasks of one Engine.IO server, owned: each is referenced until it
ends (asyncio keeps only a weak reference to a running task), and whatever still
runs when the server closes is cancelled and awaited."""
from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Tasks:
    """A small TaskGroup for tasks that start and end at any time, none awaited by
    its starter: `spawn` starts one, `close` cancels those left and waits for them."""

    __slots__ = ("_running", "_closed")

    def __init__(self) -> None:
        self._running: set[asyncio.Task] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        if self._closed:  # closing: nothing new outlives it
            task.cancel()
        return task

    async def close(self) -> None:
        """Cancel every task left and wait until each has ended."""
        self._closed = True
        current = asyncio.current_task()
        while True:
            left = [t for t in self._running if t is not current and not t.done()]
            if not left:
                break
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
        self._running.clear()
        self._closed = False  # a server may be started again (tests do)
