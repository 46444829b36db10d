"""Delivers server events to the sockets of every instance.

Durable events (emitted inside an operation's transaction) were stored in the
outbox with the write. After the commit they are appended to the broker's log,
which gives each its offset and sends it to every instance, this one included;
each instance delivers them in log order with the offset as the last argument,
once per event id. What could not be appended (Redis down, the instance killed right
after the commit) stays unpublished in the outbox, and the relay of any live
instance appends it later: an acknowledged write's events are never lost.

Volatile events (typing, presence) are emitted here at once and sent to the other
instances without a log. Token revocations travel the same way."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Awaitable, Callable

from handlers.context import Outgoing
from hub.broker import Broker, BrokerUnavailable, offset_key
from hub.gateways.members import REVOKED, Members
from storage import outbox
from storage.group_commit import GroupCommit

log = logging.getLogger("hub.fanout")

# Unpublished outbox events older than this are the relay's: their writer had time.
RELAY_AFTER = timedelta(seconds=5)
RELAY_EVERY = 1.0
PRUNE_AFTER = timedelta(hours=1)
SEEN_CAPACITY = 200_000


class Fanout:
    def __init__(self, sio, broker: Broker, *, db, instance_id: str, connections, state, metrics) -> None:
        self.sio = sio
        # Every Socket.IO server of this instance (the JSON one first; the msgpack
        # endpoint's is appended by the app): events reach clients of each parser.
        self.servers = [sio]
        # Plain WebSocket and SSE connections (hub/gateways): rooms of their own, fed
        # by the same deliveries.
        self.members = Members()
        self.broker = broker
        self.db = db
        self.instance_id = instance_id
        self.connections = connections
        self.state = state
        self.metrics = metrics
        self._seen: OrderedDict[int, None] = OrderedDict()  # event ids delivered here
        self._published: list[int] = []  # appended to the log, to be removed from the outbox
        # Appends to the log go one at a time, and those that wait meanwhile go
        # together in the next: when a group commit settles, its operations deliver
        # at once, and their events take one append instead of one each. In order,
        # too: appends on several Redis connections at once could get offsets in an
        # order other than the deliveries'.
        self._appends = GroupCommit(self._append_batch)
        self._tasks: list[asyncio.Task] = []
        # Parts of the instance itself that act on durable events (not sockets): the
        # widget origins follow assistant:changed the moment any instance commits one.
        self._listeners: dict[tuple[str, str], list[Callable[[dict], Awaitable[None]]]] = {}
        # Events this instance sends to its own sockets its own way (hub/deltas.py
        # coalesces streamed deltas per socket); called like `_emit_local`.
        self.local_emitters: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {}

    def listen(self, namespace: str, event: str, callback: Callable[[dict], Awaitable[None]]) -> None:
        """Call `callback(data)` on this instance for every such durable event, once each."""
        self._listeners.setdefault((namespace, event), []).append(callback)

    async def start(self) -> None:
        await self.broker.start(self._on_message)
        self._tasks = [asyncio.create_task(self._remove_forever(), name="outbox-remover"),
                       asyncio.create_task(self._relay_forever(), name="outbox-relay")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._remove()  # what this instance published must not be published again

    async def deliver(self, events: list[Outgoing]) -> list[str | None]:
        """Send the events; returns each one's log offset (None: volatile, or the
        bus is down and the relay will give it one)."""
        if not events:
            return []
        volatile = [e for e in events if e.event_id is None]
        durable = [e for e in events if e.event_id is not None]
        if volatile:
            # On its way first: the other instances broadcast while this one
            # writes to its own sockets (on Redis the PUBLISH goes out before the
            # local broadcast's flush).
            sending = self._send({"t": "emit", "e": [[e.namespace, e.event, e.data, e.rooms, e.skip_sid]
                                                     for e in volatile]})
            try:
                for ev in volatile:
                    await self._emit_local(ev.namespace, ev.event, ev.data, ev.rooms, ev.skip_sid)
            finally:
                await self._sent(sending)
        if durable:
            entries = [{"ns": e.namespace, "ev": e.event, "d": e.data, "r": e.rooms, "s": e.skip_sid,
                        "id": e.event_id} for e in durable]
            offsets = await self._appends.submit(entries)
            if offsets is not None:
                self._published.extend(e.event_id for e in durable)
                by_id = {e.event_id: o for e, o in zip(durable, offsets)}
                return [by_id.get(e.event_id) for e in events]
            # The bus is down: this instance's sockets get them now; the relay
            # appends them for everyone else once it is back.
            for entry in entries:
                await self._deliver_entry(entry, None)
        return [None] * len(events)

    async def revoke(self, jti: str, ttl: int) -> None:
        """Revoke a token everywhere and disconnect the sockets that use it."""
        await self.state.revoke(jti, ttl)
        await self.disconnect_revoked(jti, ttl)
        await self._publish({"t": "revoke", "j": jti, "ttl": ttl})

    async def _append_batch(self, batches: list[list[dict]]) -> list[list[str] | None]:
        """The log append of several deliveries' entries: one append (on Redis, one
        script call) for all of them, in order."""
        offsets = await self._append([entry for entries in batches for entry in entries])
        if offsets is None:
            return [None] * len(batches)
        out, start = [], 0
        for entries in batches:
            out.append(offsets[start:start + len(entries)])
            start += len(entries)
        return out

    async def _append(self, entries: list[dict]) -> list[str] | None:
        try:
            offsets = await self.broker.append(self.instance_id, entries)
            self.metrics.child(self.metrics.bus, "out", "ok").inc()
            return offsets
        except BrokerUnavailable as exc:
            self.metrics.child(self.metrics.bus, "out", "error").inc()
            log.error("could not append %d durable events; the outbox relay will: %s", len(entries), exc)
            return None

    async def _publish(self, message: dict) -> None:
        await self._sent(self._send(message))

    def _send(self, message: dict):
        """Start publishing; `_sent` awaits the outcome."""
        message["o"] = self.instance_id
        try:
            return self.broker.publish_soon(message)
        except BrokerUnavailable as exc:
            return exc

    async def _sent(self, sending) -> None:
        try:
            if isinstance(sending, BrokerUnavailable):
                raise sending
            await sending
            self.metrics.child(self.metrics.bus, "out", "ok").inc()
        except BrokerUnavailable as exc:
            self.metrics.child(self.metrics.bus, "out", "error").inc()
            log.error("could not publish to other instances: %s", exc)

    async def _on_message(self, message: dict) -> None:
        kind = message.get("t")
        if kind == "log":
            if message["x"] and message["x"][0]:
                # The offset starts with the append's time (ms): how long it took to get here.
                self.metrics.bus_lag.observe(max(0.0, time.time() - offset_key(message["x"][0])[0] / 1000))
            for entry, offset in zip(message["e"], message["x"]):
                await self._deliver_entry(entry, offset)
            return
        if message.get("o") == self.instance_id:
            return
        self.metrics.child(self.metrics.bus, "in", "ok").inc()
        if kind == "emit":
            for namespace, event, data, rooms, skip_sid in message["e"]:
                await self._emit_local(namespace, event, data, rooms, skip_sid)
        elif kind == "revoke":
            await self.disconnect_revoked(message["j"], message["ttl"])

    async def _deliver_entry(self, entry: dict, offset: str | None) -> None:
        """Once per event id on this instance, whichever path brings it first."""
        event_id = entry["id"]
        if event_id in self._seen:
            return
        self._seen[event_id] = None
        if len(self._seen) > SEEN_CAPACITY:
            self._seen.popitem(last=False)
        # Listeners first: a client told of a change finds this instance already acting on it.
        for callback in self._listeners.get((entry["ns"], entry["ev"]), ()):
            try:
                await callback(entry["d"])
            except Exception:
                log.exception("a listener of %s %s failed", entry["ns"], entry["ev"])
        await self._emit_local(entry["ns"], entry["ev"], entry["d"], entry["r"], entry["s"], offset)

    async def _emit_local(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid,
                          offset: str | None = None) -> None:
        own = self.local_emitters.get((namespace, event))
        if own is not None:
            return await own(namespace, event, data, rooms, skip_sid, offset)
        args = (data, offset) if offset else data
        total = 0
        for server in self.servers:
            ns_rooms = server.manager.rooms.get(namespace)
            if not ns_rooms:
                continue
            reached = 0
            for room in rooms:
                members = ns_rooms.get(room)
                if members:
                    # Not counting the skipped socket: an event for a user's other
                    # sockets (message:sent) mostly reaches no one, and is then not
                    # even encoded.
                    reached += len(members) - (skip_sid in members)
            if reached:
                await server.emit(event, args, to=rooms, namespace=namespace, skip_sid=skip_sid)
                total += reached
        if namespace in self.members.rooms:
            total += self.members.emit(namespace, event, data, rooms, skip_sid, offset)
        if total:
            self.metrics.child(self.metrics.deliveries, namespace).inc(total)

    async def disconnect_revoked(self, jti: str, ttl: int) -> None:
        self.state.remember_revoked(jti, ttl)
        for namespace, sid in self.connections.using(jti):
            member = self.members.by_sid.get(sid)
            if member is not None:
                member.close(REVOKED, "token revoked")
                continue
            for server in self.servers:
                await server.disconnect(sid, namespace=namespace)

    # --- the outbox's side -------------------------------------------------------

    async def _remove(self) -> None:
        ids, self._published = self._published, []
        if not ids:
            return
        try:
            async with self.db.transaction() as tx:
                await outbox.remove_published(tx, ids)
        except Exception:
            # Left in the outbox, they are relayed again and dropped as duplicates.
            log.exception("could not remove %d published events from the outbox", len(ids))

    async def _remove_forever(self) -> None:
        """Removes in batches: one DELETE for everything published in the last moment."""
        while True:
            await asyncio.sleep(0.2)
            await self._remove()

    async def _relay_forever(self) -> None:
        """Never dies silently: logs and carries on at the next tick."""
        ticks = 0
        while True:
            await asyncio.sleep(RELAY_EVERY)
            ticks += 1
            try:
                while await self._relay_batch():
                    pass
                if ticks % 60 == 0:
                    async with self.db.transaction() as tx:
                        await outbox.prune(tx, PRUNE_AFTER)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")

    async def _relay_batch(self, limit: int = 500) -> bool:
        """Append one batch of stale unpublished events; True if it was full."""
        async with self.db.transaction() as tx:
            rows = await outbox.claim_stale(tx, RELAY_AFTER, limit)
            if not rows:
                return False
            entries = [{"ns": r.namespace, "ev": r.event, "d": r.data, "r": r.rooms, "s": r.skip_sid, "id": r.id}
                       for r in rows]
            try:
                appended = await self._append(entries)
            except Exception:
                # Something in the batch the bus refuses: find it, alone.
                return await self._relay_each(tx, rows, entries) and len(rows) == limit
            if appended is None:
                return False
            await outbox.remove_published(tx, [r.id for r in rows])
        log.warning("relayed %d outbox events that their writer had not published", len(rows))
        return len(rows) == limit

    async def _relay_each(self, tx, rows: list, entries: list[dict]) -> bool:
        """Append the events one at a time; one the bus refuses is set aside (logged
        once, counted), never retried: no single row may stall the relay. False
        when the bus became unavailable."""
        relayed, available = [], True
        for row, entry in zip(rows, entries):
            try:
                if await self._append([entry]) is None:
                    available = False
                    break
            except Exception:
                log.exception("outbox event %d (%s %s) cannot be relayed; set aside", row.id, row.namespace,
                              row.event)
                await outbox.set_aside(tx, row.id)
                self.metrics.set_aside.inc()
                continue
            relayed.append(row.id)
        await outbox.remove_published(tx, relayed)
        return available
