"""Group commit: concurrent writes of one kind share one write (a transaction, a log
append).

While one batch is being written, the requests that arrive meanwhile wait and go
together in the next one. Alone, a request is written at once; under load a
transaction carries many requests, and its round trips, statement overhead and
commit are paid once for all of them. This is what lets one instance take
thousands of acknowledged chat messages a second on PostgreSQL (docs/performance.md).
The fan-out's appends to the event log batch the same way (hub/delivery/fanout.py).

If a batch fails, each of its requests is retried alone, so only the request that
caused the failure (a bad reference, a lost race, a deadlock with another instance's
batch) gets the error."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Generic, TypeVar

from common.outages import is_outage

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], *, limit: int = 200) -> None:
        """`write(items)` writes the items together (one transaction, one append) and
        returns one result per item, in order; raising fails the whole batch."""
        self._write = write
        self._limit = limit
        self._pending: list[tuple[T, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            # Started as a task, so the requests of this loop iteration join the batch.
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._limit], self._pending[self._limit:]
                await self._run(batch)
        finally:
            self._writer = None

    async def _run(self, batch: list[tuple[T, asyncio.Future]], *, again: bool = True) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except Exception as exc:
            if is_outage(exc):
                # A lost connection (the pool takes a fresh one) is worth one more
                # try of the whole batch; an unreachable database is not worth one
                # try per request: each would wait for its own failure.
                if again:
                    await self._run(batch, again=False)
                    return
                for _, future in batch:
                    _settle(future, exc=exc)
                return
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            for one in batch:
                await self._run([one])
            return
        for (_, future), result in zip(batch, results):
            _settle(future, result=result)


def _settle(future: asyncio.Future, *, result=None, exc: BaseException | None = None) -> None:
    if future.done():  # its requester was cancelled
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
