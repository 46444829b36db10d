"""The background tasks of one Engine.IO server, owned: each is referenced until it
ends (asyncio keeps only a weak reference to a running task), and whatever still
runs when the server closes is cancelled and awaited."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("engine.tasks")

# A cancelled task normally ends at once. One that swallowed its cancellation (some
# library code does, once) is cancelled again after each pause; after `PATIENCE` in
# all, closing goes on without it, so a server's shutdown stays bounded.
PAUSE = 0.5
PATIENCE = 5.0


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
        """Cancel every task left and wait until each has ended, or `PATIENCE` has
        passed (`cancel_and_wait`)."""
        self._closed = True
        current = asyncio.current_task()
        await cancel_and_wait(*(t for t in self._running if t is not current))
        self._running.clear()
        self._closed = False  # a server may be started again (tests do)


async def cancel_and_wait(*tasks: asyncio.Task | None) -> None:
    """Cancel the tasks (None: none) and wait until each has ended; one that swallowed
    its cancellation is cancelled again after each `PAUSE`, and after `PATIENCE` those
    still running are named in the log and left behind. Every background loop of the
    application stops this way, so a shutdown is never held up by one."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE
    while True:
        left = [t for t in tasks if t is not None and not t.done()]
        if not left:
            return
        if loop.time() >= deadline:
            log.warning("closing without %d task(s) that ignored cancellation: %s", len(left),
                        ", ".join(sorted({t.get_coro().__qualname__ for t in left})))
            return
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=min(PAUSE, max(deadline - loop.time(), 0.01)))
