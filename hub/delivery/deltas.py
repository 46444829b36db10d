"""Delivers `message:delta` to this instance's sockets, coalescing for slow ones.

A socket that keeps up gets every delta as it comes. One that is behind
(`hub.manager.backlogged`) gets nothing more queued: the deltas it misses meanwhile
wait here, per stream, and go out as one delta (their text concatenated, the latest
seq) once it caught up. So a slow client holds at most one pending delta per stream,
never a growing backlog. After a client read a stream's text so far
(`dialog:streams`), `settle` drops what it already has, so nothing reaches it twice."""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from hub.manager import backlogged

log = logging.getLogger("hub.delivery.deltas")

FLUSH_EVERY = 0.01  # seconds between looks at the sockets that were behind
FLOORS = 10_000  # (socket, stream) pairs whose settled seq is remembered


class DeltaSender:
    def __init__(self, fanout) -> None:
        self.fanout = fanout
        # (sid, stream_id) -> [server, namespace, data of the last delta, [(seq, text)]]
        self._pending: dict[tuple[str, str], list] = {}
        self._floors: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._flusher: asyncio.Task | None = None
        self.coalesced = 0  # deltas folded into another (for metrics and tests)

    async def emit_local(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid,
                         offset: str | None = None) -> None:
        stream_id, seq = data["stream_id"], data["seq"]
        sent = 0
        skipped = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        for server in self.fanout.servers:
            for sid, eio_sid in list(server.manager.get_participants(namespace, rooms)):
                if sid in skipped or self._floors.get((sid, stream_id), 0) >= seq:
                    continue
                held = self._pending.get((sid, stream_id))
                if held is not None:
                    held[2] = data
                    held[3].append((seq, data["text"]))
                    self.coalesced += 1
                elif backlogged(server, eio_sid):
                    self._pending[(sid, stream_id)] = [server, namespace, data, [(seq, data["text"])]]
                    self._flush_soon()
                else:
                    await server.emit(event, data, to=sid, namespace=namespace)
                    sent += 1
        if namespace in self.fanout.members.rooms:  # plain WebSocket and SSE: as they come
            sent += self.fanout.members.emit(namespace, event, data, rooms, skip_sid, offset)
        if sent:
            metrics = self.fanout.metrics
            metrics.child(metrics.deliveries, namespace).inc(sent)

    def settle(self, sid: str, stream_id: str, seq: int) -> None:
        """The socket has the stream's text up to `seq`: send it only what follows."""
        self._floors[(sid, stream_id)] = max(seq, self._floors.get((sid, stream_id), 0))
        self._floors.move_to_end((sid, stream_id))
        while len(self._floors) > FLOORS:
            self._floors.popitem(last=False)
        held = self._pending.get((sid, stream_id))
        if held is not None:
            held[3] = [(n, text) for n, text in held[3] if n > seq]
            if not held[3]:
                del self._pending[(sid, stream_id)]

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="delta-flusher")

    async def _flush_forever(self) -> None:
        while self._pending:
            await asyncio.sleep(FLUSH_EVERY)
            for key, (server, namespace, data, texts) in list(self._pending.items()):
                sid = key[0]
                eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
                if eio_sid is None:  # gone
                    del self._pending[key]
                    continue
                if backlogged(server, eio_sid):
                    continue
                del self._pending[key]
                try:
                    await server.emit("message:delta", {**data, "text": "".join(t for _, t in texts)}, to=sid,
                                      namespace=namespace)
                except Exception:
                    log.exception("could not send a coalesced delta")
