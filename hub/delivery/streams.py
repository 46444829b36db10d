"""The streams service: what the stream operations use besides the buffer
(hub/backends/streams/): per-stream locks, and the sending of deltas at once and
in order, without waiting for the operation's end (per-socket delivery and
coalescing: hub/delivery/coalescing.py)."""
from __future__ import annotations

import asyncio

from pydantic import BaseModel

from handlers.context import Outgoing
from handlers.streams import MessageDelta
from hub.backends.streams import Streams
from hub.delivery.coalescing import DeltaSender

MAX_LOCKS = 10_000  # per-stream locks kept on an instance before the idle ones are dropped


class StreamLocks:
    """Deltas of one stream are appended and sent one at a time (in the order this
    instance received them), so the seq order is the text order and the send order."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, stream_id: str) -> asyncio.Lock:
        lock = self._locks.get(stream_id)
        if lock is None:
            if len(self._locks) >= MAX_LOCKS:  # streams cut or timed out never said goodbye here
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[stream_id] = asyncio.Lock()
        return lock

    def drop(self, stream_id: str) -> None:
        lock = self._locks.get(stream_id)
        if lock is not None and not lock.locked():
            del self._locks[stream_id]


class StreamService:
    """What the stream operations use: the buffer, the per-stream locks, and the
    sending of deltas, at once and in order, without waiting for the operation's end."""

    def __init__(self, buffer: Streams, fanout) -> None:
        self.buffer = buffer
        self.locks = StreamLocks()
        self.fanout = fanout
        # Deltas go to this instance's Socket.IO sockets coalesced per slow socket.
        self.deltas = DeltaSender()
        spec = MessageDelta.__server_event__
        fanout.deliver_locally(spec.namespace, spec.event, self.deltas.deliver)

    async def send(self, event: BaseModel, rooms: list[str]) -> None:
        spec = type(event).__server_event__
        await self.fanout.deliver([Outgoing(spec.namespace, spec.event, event.model_dump(mode="json"), rooms)])
