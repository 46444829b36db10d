"""Coalescing per socket, in the send path: one mechanism, two policies.

A socket that keeps up gets every event as it comes. One that is behind (it has not
taken what was sent to it: a long-poll not fetched, a paused websocket) gets nothing
more queued: what it misses meanwhile waits here, one item per thing, and goes out
once it caught up. So a slow client costs one pending item per thing it watches,
never a growing backlog. `Held` is that mechanism; the policies say what one item
is:

* `Coalescer` (replace): a server event registered with `coalesce_by` (e.g.
  `resource:updated` by resource type and id) carries a thing's whole state at a
  growing `version`, so only the newest update per thing is held. Durable updates
  (status changes, ends: they have a log offset) are never held: they go out as
  every durable event does, and drop what was held for the same thing, which they
  supersede. An update older than one already delivered on this instance (a
  volatile one overtaken by a durable one on the way between instances) is dropped.
* `DeltaSender` (concatenate): `message:delta` of a streamed reply; the deltas held
  for a stream go out as one (their text concatenated, the latest seq). After a
  client read a stream's text so far (`dialog:streams`), `settle` drops what it
  already has, so nothing reaches it twice.

Both are local delivery hooks of the fan-out (`Fanout.deliver_locally`): they send
to this instance's Socket.IO sockets; plain WebSocket and SSE members get the
events from the fan-out as they come."""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from hub.delivery.local import Skip, sockets_reached
from engine import backlogged, cancel_and_wait

log = logging.getLogger("hub.delivery.coalescing")

VERSIONS_KEPT = 100_000  # things whose last version this instance remembers
FLOORS = 10_000  # (socket, stream) pairs whose settled seq is remembered

Key = tuple  # (namespace, event, *coalesce_by values)
Slot = tuple  # (server, namespace, sid)


class Held:
    """What waits for sockets that are behind, and the task that sends it once they
    caught up: every FLUSH_EVERY seconds while anything is held."""

    FLUSH_EVERY = 0.05
    TASK = "coalesce-flush"

    def __init__(self) -> None:
        self._flusher: asyncio.Task | None = None

    def _holding(self) -> bool:
        raise NotImplementedError

    async def _flush(self) -> None:
        """Send what is held to each socket that caught up; forget gone sockets."""
        raise NotImplementedError

    def _flush_soon(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name=self.TASK)

    async def _flush_forever(self) -> None:
        try:
            while self._holding():
                await asyncio.sleep(self.FLUSH_EVERY)
                await self._flush()
        except Exception:
            log.exception("coalesced updates could not be flushed")
        finally:
            self._flusher = None

    async def stop(self) -> None:
        if self._flusher is not None:
            await cancel_and_wait(self._flusher)


class Coalescer(Held):
    """Replace: the newest update per thing."""

    def __init__(self, events: dict[tuple[str, str], tuple[str, ...]]) -> None:
        super().__init__()
        self.events = events  # (namespace, event) -> the fields naming the thing
        self.versions: OrderedDict[Key, int] = OrderedDict()
        self.held: dict[Slot, dict[Key, tuple[str, dict]]] = {}

    def takes(self, namespace: str, event: str) -> bool:
        return (namespace, event) in self.events

    def _key(self, namespace: str, event: str, data: dict) -> Key:
        return (namespace, event, *(data.get(f) for f in self.events[(namespace, event)]))

    def current(self, namespace: str, event: str, data: dict, durable: bool) -> bool:
        """Record the update's version; False for a volatile update older than one
        already delivered here (it must not be sent)."""
        key, version = self._key(namespace, event, data), data.get("version") or 0
        last = self.versions.get(key, 0)
        if not durable and version <= last:
            return False
        self.versions[key] = max(version, last)
        self.versions.move_to_end(key)
        if len(self.versions) > VERSIONS_KEPT:
            self.versions.popitem(last=False)
        if durable:
            for updates in self.held.values():
                held = updates.get(key)
                if held is not None and (held[1].get("version") or 0) <= version:
                    del updates[key]
        return True

    async def deliver(self, servers: list, namespace: str, event: str, data: dict, rooms: list[str],
                      skip_sid: Skip, offset: str | None) -> int | None:
        """The fan-out's hook for the events it coalesces: None for an update older
        than one already delivered here (not delivered at all, to no kind of socket)."""
        if not self.current(namespace, event, data, durable=offset is not None):
            return None
        total = 0
        for server in servers:
            reached = sockets_reached(server, namespace, rooms, skip_sid)
            if reached:
                if offset:
                    await server.emit(event, (data, offset), to=rooms, namespace=namespace, skip_sid=skip_sid)
                else:
                    await self.emit(server, namespace, event, data, rooms, skip_sid)
                total += reached
        return total

    async def emit(self, server, namespace: str, event: str, data: dict, rooms: list[str], skip_sid) -> None:
        """Send a volatile update to the rooms' sockets on `server`, holding the newest
        one per thing for those that have not taken the previous ones yet."""
        manager = server.manager
        key = self._key(namespace, event, data)
        holding, sending = [], False
        for sid, eio_sid in manager.get_participants(namespace, rooms):
            if sid == skip_sid:
                continue
            slot = (server, namespace, sid)
            updates = self.held.get(slot)
            if (updates is not None and key in updates) or backlogged(server, eio_sid):
                self.held.setdefault(slot, {})[key] = (event, data)
                holding.append(sid)
            else:
                sending = True
        if holding:
            self._flush_soon()
        if sending:
            await server.emit(event, data, to=rooms, namespace=namespace, skip_sid=holding + [skip_sid])

    def _holding(self) -> bool:
        return bool(self.held)

    async def _flush(self) -> None:
        for slot in list(self.held):
            server, namespace, sid = slot
            eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
            if eio_sid is None:
                del self.held[slot]
                continue
            if backlogged(server, eio_sid):
                continue
            updates = self.held.pop(slot)
            for event, data in updates.values():
                await server.emit(event, data, to=sid, namespace=namespace)


class DeltaSender(Held):
    """Concatenate: one pending delta per (socket, stream)."""

    FLUSH_EVERY = 0.01  # a streamed reply is read as it grows: flush sooner
    TASK = "delta-flusher"

    def __init__(self) -> None:
        super().__init__()
        # (sid, stream_id) -> [server, namespace, data of the last delta, [(seq, text)]]
        self._pending: dict[tuple[str, str], list] = {}
        self._floors: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.coalesced = 0  # deltas folded into another (for metrics and tests)

    async def deliver(self, servers: list, namespace: str, event: str, data: dict, rooms: list[str],
                      skip_sid: Skip, offset: str | None = None) -> int:
        """The fan-out's hook for `message:delta`: the Socket.IO sockets sent to now."""
        stream_id, seq = data["stream_id"], data["seq"]
        sent = 0
        skipped = skip_sid if isinstance(skip_sid, list) else (skip_sid,)
        for server in servers:
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
        return sent

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

    def _holding(self) -> bool:
        return bool(self._pending)

    async def _flush(self) -> None:
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
