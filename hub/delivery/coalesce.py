"""Coalescing of state updates per socket, in the send path.

A server event registered with `coalesce_by` (e.g. `resource:updated` by resource
type and id) carries a thing's whole state at a growing `version`. Its volatile
updates (progress) go to a socket at once while the socket keeps up; while it has
not taken what was sent to it (HubManager.backlogged: a long-poll not fetched, a
paused websocket), only the newest update per thing waits for it, and is sent when
it has caught up. So a slow client gets the latest state, never a backlog, and its
memory here is one update per thing it watches.

Durable updates (status changes, ends: they have a log offset) are never held: they
go out as every durable event does, and drop what was held for the same thing,
which they supersede. An update older than one already delivered on this instance
(a volatile one overtaken by a durable one on the way between instances) is dropped."""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

log = logging.getLogger("hub.delivery.coalesce")

FLUSH_EVERY = 0.05  # seconds between looks at the held sockets
VERSIONS_KEPT = 100_000  # things whose last version this instance remembers

Key = tuple  # (namespace, event, *coalesce_by values)
Slot = tuple  # (server, namespace, sid)


class Coalescer:
    def __init__(self, events: dict[tuple[str, str], tuple[str, ...]]) -> None:
        self.events = events  # (namespace, event) -> the fields naming the thing
        self.versions: OrderedDict[Key, int] = OrderedDict()
        self.held: dict[Slot, dict[Key, tuple[str, dict]]] = {}
        self._flusher: asyncio.Task | None = None

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

    async def emit(self, server, namespace: str, event: str, data: dict, rooms: list[str], skip_sid) -> None:
        """Send a volatile update to the rooms' sockets on `server`, holding the newest
        one per thing for those that have not taken the previous ones yet."""
        manager = server.manager
        backlogged = getattr(manager, "backlogged", None)
        key = self._key(namespace, event, data)
        holding, sending = [], False
        for sid, eio_sid in manager.get_participants(namespace, rooms):
            if sid == skip_sid:
                continue
            slot = (server, namespace, sid)
            updates = self.held.get(slot)
            if (updates is not None and key in updates) or (backlogged is not None and backlogged(eio_sid)):
                self.held.setdefault(slot, {})[key] = (event, data)
                holding.append(sid)
            else:
                sending = True
        if holding and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="coalesce-flush")
        if sending:
            await server.emit(event, data, to=rooms, namespace=namespace, skip_sid=holding + [skip_sid])

    async def _flush_forever(self) -> None:
        try:
            while self.held:
                await asyncio.sleep(FLUSH_EVERY)
                await self._flush()
        except Exception:
            log.exception("coalesced updates could not be flushed")
        finally:
            self._flusher = None

    async def _flush(self) -> None:
        """Send what is held to each socket that caught up; forget gone sockets."""
        for slot in list(self.held):
            server, namespace, sid = slot
            eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
            if eio_sid is None:
                del self.held[slot]
                continue
            backlogged = getattr(server.manager, "backlogged", None)
            if backlogged is not None and backlogged(eio_sid):
                continue
            updates = self.held.pop(slot)
            for event, data in updates.values():
                await server.emit(event, data, to=sid, namespace=namespace)

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
