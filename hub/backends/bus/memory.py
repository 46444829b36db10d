"""The bus and log in one process (base.py says what they do): brokers sharing one
`MemoryBus` behave like instances sharing Redis."""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Callable, Iterator

from hub.backends.bus import codec
from hub.backends.bus.base import HOLD, Broker, Handler, Replay, Route, offset_key, scan


class MemoryLog:
    """One namespace's log, in memory: each entry's offset, time, event id and encoded
    entry, in columns. A tuple per entry would be a container that the garbage
    collector tracks: minutes of them, alive until they expire, made every young
    collection scan tens of thousands of them (13-31 ms pauses at 2,000 chat
    messages/s). Strings, floats, ints and bytes are not tracked."""

    __slots__ = ("offsets", "times", "ids", "entries")

    def __init__(self) -> None:
        self.offsets: deque[str] = deque()
        self.times: deque[float] = deque()
        self.ids: deque[int] = deque()
        self.entries: deque[bytes] = deque()

    def append(self, offset: str, at: float, event_id: int, packed: bytes) -> None:
        self.offsets.append(offset)
        self.times.append(at)
        self.ids.append(event_id)
        self.entries.append(packed)

    def expire(self, before: float) -> Iterator[int]:
        """Drop the entries older than `before`; yields their event ids."""
        times = self.times
        while times and times[0] < before:
            times.popleft()
            self.offsets.popleft()
            self.entries.popleft()
            yield self.ids.popleft()


class MemoryBus:
    """An in-process bus and log; brokers sharing one behave like instances sharing Redis."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.logs: dict[str, MemoryLog] = {}
        self.logged: dict[int, float] = {}  # event id -> until when it counts as logged
        self.held_until = 0.0  # direct appends wait until then (see Broker.append)
        # Messages being handed out (numbered), and barriers waiting for those
        # numbered up to theirs to be handed out.
        self.dispatched = 0
        self.dispatching: set[int] = set()
        self.barriers: list[tuple[int, asyncio.Future]] = []
        self.last = (0, 0)

    def next_offset(self, now: float) -> str:
        ms = int(now * 1000)
        last_ms, seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self.last[0]}-{self.last[1]}"


class MemoryBroker(Broker):
    def __init__(self, bus: MemoryBus | None = None, retention: float = 150.0) -> None:
        super().__init__(retention)
        self.bus = bus or MemoryBus()
        self.handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self.handler = handler
        self.bus.handlers.append(handler)

    async def publish(self, message: dict, to: Route = None) -> None:
        # Not routed: in one process every broker gets everything. Encoded and
        # decoded as Redis would, so both backends accept the same messages.
        await self._dispatch(codec.roundtrip(message))

    async def _dispatch(self, message: dict) -> None:
        # Delivered before the append returns: while one append delivers, the next
        # batch of entries gathers (fanout's group commit), and a batch's deliveries
        # go out in one write per socket. Delivering from a reader task instead made
        # appends smaller and more frequent: ~12% more CPU per chat message at
        # 3,000/s (docs/performance.md).
        bus = self.bus
        bus.dispatched += 1
        number = bus.dispatched
        bus.dispatching.add(number)
        try:
            for handler in list(bus.handlers):
                await handler(message)
        finally:
            bus.dispatching.discard(number)
            if bus.barriers:
                oldest = min(bus.dispatching, default=number + 1)
                for waited, done in [b for b in bus.barriers if b[0] < oldest]:
                    bus.barriers.remove((waited, done))
                    if not done.done():
                        done.set_result(None)

    async def barrier(self, timeout: float) -> bool:
        """Messages are handed to every broker in turn: wait for those being handed
        out now to be done."""
        bus = self.bus
        if not bus.dispatching:
            return True
        waiter = (bus.dispatched, asyncio.get_running_loop().create_future())
        bus.barriers.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in bus.barriers:
                bus.barriers.remove(waiter)

    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        now = time.time()
        bus = self.bus
        if not (relay or hold) and bus.held_until > now:
            return None
        offsets: list[str | None] = []
        fresh = []
        for entry in entries:
            event_id = entry["id"]
            if bus.logged.get(event_id, 0) > now:
                offsets.append(None)
                continue
            bus.logged[event_id] = now + self.retention
            offset = bus.next_offset(now)
            stream = bus.logs.get(entry["ns"])
            if stream is None:
                stream = bus.logs[entry["ns"]] = MemoryLog()
            # Kept encoded, as Redis keeps it: a bytes object is one thing the garbage
            # collector never scans, where the decoded event is dozens (minutes of
            # them made every full collection take longer and longer). In JSON: the
            # log never leaves the process, and orjson encodes it ~3x faster than msgpack.
            stream.append(offset, now, event_id, codec.encode_log_entry(entry))
            offsets.append(offset)
            fresh.append((offset, entry))
        for stream in bus.logs.values():
            for expired in stream.expire(now - self.retention):
                bus.logged.pop(expired, None)
        if fresh and hold:
            bus.held_until = now + HOLD
        if fresh:
            await self._dispatch({"t": "log", "o": origin, "e": [e for _, e in fresh], "x": [o for o, _ in fresh]})
        return offsets

    async def since(self, namespace: str, offset: str, limit: int) -> list[tuple[str, dict]] | None:
        after = offset_key(offset)
        log = self.bus.logs.get(namespace) or MemoryLog()
        found = [(o, packed) for o, packed in zip(log.offsets, log.entries) if offset_key(o) > after]
        return None if len(found) > limit else [(o, codec.decode_log_entry(packed)) for o, packed in found]

    async def replay(self, namespace: str, offset: str, wanted: Callable[[dict], bool],
                     limit: int) -> Replay | None:
        after = offset_key(offset)
        log = self.bus.logs.get(namespace) or MemoryLog()
        rows = ((o, codec.decode_log_entry(packed)) for o, packed in zip(list(log.offsets), list(log.entries))
                if offset_key(o) > after)
        found = Replay([], None)
        return found if scan(rows, wanted, found, limit) else None

    async def stop(self) -> None:
        if self.handler in self.bus.handlers:
            self.bus.handlers.remove(self.handler)
