"""Delivers server events to the sockets of every instance.

Durable events (emitted inside an operation's transaction) were stored in the
outbox with the write. After the commit they are appended to the broker's log,
which gives each its offset and sends it to every instance, this one included;
each instance delivers them in log order with the offset as the last argument,
once per event id. What could not be appended (Redis down, the instance killed right
after the commit) stays unpublished in the outbox, and the relay of any live
instance appends it later: an acknowledged write's events are never lost.

Nor overtaken: while events may be left behind in the outbox (this instance could
not append, lost the bus, or its relay found someone's stale events), newer events
are not appended past them. They stay in the outbox too, and the relay appends the
whole outbox in id order (the commit order of a thread's writes), one relay at a
time across instances, before appends go direct again.

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
from handlers.registry import REGISTRY
from hub.broker import Broker, BrokerUnavailable, offset_key
from hub.coalesce import Coalescer
from hub.adapters.gateways.members import REVOKED, Members
from storage import outbox, published
from storage.base import aware, utcnow
from storage.group_commit import GroupCommit

log = logging.getLogger("hub.fanout")

# Unpublished outbox events older than this are the relay's: their writer had time.
# Short, as newer events of their threads may be appended meanwhile (an instance cut
# off from Redis); a writer that is merely slow is harmless, the log drops an event
# appended twice.
RELAY_AFTER = timedelta(seconds=0.5)
RELAY_EVERY = 0.25
PRUNE_EVERY = 60.0
PRUNE_AFTER = timedelta(hours=1)
SEEN_CAPACITY = 200_000


class Fanout:
    def __init__(self, sio, broker: Broker, *, db, instance_id: str, connections, state, metrics,
                 published_retention: timedelta = timedelta(days=7)) -> None:
        self.sio = sio
        # Every Socket.IO server of this instance (the JSON one first; the msgpack
        # endpoint's is appended by the app): events reach clients of each parser.
        self.servers = [sio]
        # Plain WebSocket and SSE connections (hub/adapters/gateways): rooms of their own, fed
        # by the same deliveries.
        self.members = Members()
        self.broker = broker
        self.db = db
        self.instance_id = instance_id
        self.connections = connections
        self.state = state
        self.metrics = metrics
        self.published_retention = published_retention
        self._seen: OrderedDict[int, None] = OrderedDict()  # event ids delivered here
        # namespace -> {sid: the newest offset a recovery replayed to it}. The bus may
        # still bring this instance events up to there (it lagged behind the log, or
        # catches up after a loss of its own); the socket had them from the replay.
        self._replayed: dict[str, dict[str, tuple[int, int]]] = {}
        self._published: list[int] = []  # appended to the log, to be removed from the outbox
        # Appends to the log go one at a time, and those that wait meanwhile go
        # together in the next: when a group commit settles, its operations deliver
        # at once, and their events take one append instead of one each. In order,
        # too: appends on several Redis connections at once could get offsets in an
        # order other than the deliveries'.
        self._appends = GroupCommit(self._append_batch)
        self._tasks: list[asyncio.Task] = []
        # True while events may be left behind in the outbox: new durable events
        # then wait there for the relay, behind them. `_losses`: the bus losses
        # already taken into account.
        self._backlog = False
        self._waiting: list[dict] = []  # entries left in the outbox since the relay's pass began
        self._losses = broker.losses
        # The next relay pass holds direct appends everywhere (Broker.append): this
        # instance failed to append, or lost the bus.
        self._hold_next = False
        self._failed = False  # an append failed since the others were last told (`_signal`)
        self._relay_now = asyncio.Event()
        # Parts of the instance itself that act on durable events (not sockets): the
        # widget origins follow assistant:changed the moment any instance commits one.
        self._listeners: dict[tuple[str, str], list[Callable[[dict], Awaitable[None]]]] = {}
        # State updates held per slow socket (registered with `coalesce_by`).
        self.coalescer = Coalescer({key: spec.coalesce_by for key, spec in REGISTRY.events.items()
                                    if spec.coalesce_by})
        # Events this instance sends to its own sockets its own way (hub/deltas.py
        # coalesces streamed deltas per socket); called like `_emit_local`.
        self.local_emitters: dict[tuple[str, str], Callable[..., Awaitable[None]]] = {}
        # Namespace -> how this instance delivers another's broadcast to it (`share`).
        self.shared: dict[str, Callable[[str, list], Awaitable[None]]] = {}

    def listen(self, namespace: str, event: str, callback: Callable[[dict], Awaitable[None]]) -> None:
        """Call `callback(data)` on this instance for every such durable event, once each."""
        self._listeners.setdefault((namespace, event), []).append(callback)

    async def start(self) -> None:
        await self.broker.start(self._on_message)
        self._tasks = [asyncio.create_task(self._remove_forever(), name="outbox-remover"),
                       asyncio.create_task(self._relay_forever(), name="outbox-relay")]
        if not self.db.is_sqlite:
            self._tasks.append(asyncio.create_task(outbox.watch_left_behind(self.db.url, self._left_behind),
                                                   name="outbox-left-behind"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.coalescer.stop()
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
            if self.broker.losses != self._losses:  # the bus was lost: others' events may be left behind
                self._losses, self._hold_next = self.broker.losses, True
                self._backlog = True
            entries = [{"ns": e.namespace, "ev": e.event, "d": e.data, "r": e.rooms, "s": e.skip_sid,
                        "id": e.event_id} for e in durable]
            if not self._backlog:
                offsets = await self._appends.submit(entries)
                if offsets is not None:
                    self._published.extend(e.event_id for e in durable)
                    by_id = {e.event_id: o for e, o in zip(durable, offsets)}
                    return [by_id.get(e.event_id) for e in events]
            # Events are left behind, the bus is down, or appends are held: the
            # relays append these, in outbox order with everything left behind.
            # Not delivered here meanwhile: other instances' events of the same
            # threads, written before these, would reach this instance's sockets
            # after them.
            self._defer(entries)
            if self._failed or not self.broker.healthy:
                await self._signal()
        return [None] * len(events)

    async def _signal(self) -> None:
        """This instance could not append (cut off from Redis, say): tell the others
        before the write is acknowledged, so that their newer events wait behind
        these rather than reach the log first."""
        self._failed = False
        try:
            async with asyncio.timeout(1.0):
                async with self.db.transaction() as tx:
                    await outbox.signal_left_behind(tx, self.instance_id)
        except Exception as exc:  # the relays' polling finds them anyway
            log.warning("could not tell the other instances about events left behind: %s", exc)

    def _left_behind(self, origin: str) -> None:
        """Another instance left events in the outbox: append nothing directly until
        the relays have taken them."""
        if origin != self.instance_id:
            self._backlog = self._hold_next = True
            self._relay_now.set()

    def _defer(self, entries: list[dict]) -> None:
        """Leave a delivery's events in the outbox for the relay, and keep the next
        ones behind them until the relay has appended everything left behind."""
        self._backlog = True
        self._waiting.extend(entries)
        self._relay_now.set()

    def replayed(self, namespace: str, sid: str, head: str) -> None:
        """A recovery sent `sid` its events of the log up to `head`: no live event up
        to there is sent to it again (see `_skip_replayed`)."""
        self._replayed.setdefault(namespace, {})[sid] = offset_key(head)

    def _skip_replayed(self, namespace: str, offset: str, skip_sid: str | None) -> str | list[str] | None:
        """`skip_sid` plus the sockets that a recovery already sent the log past
        `offset`. The bus brings a namespace's events in offset order: once it brings
        one past a socket's replay, it brings nothing more that the replay sent."""
        marks = self._replayed[namespace]
        key = offset_key(offset)
        replayed = [sid for sid, head in marks.items() if key <= head]
        if len(replayed) < len(marks):
            for sid in [sid for sid, head in marks.items() if key > head]:
                del marks[sid]
            if not marks:
                del self._replayed[namespace]
        if not replayed:
            return skip_sid
        return replayed + [skip_sid] if skip_sid is not None else replayed

    def _prune_replayed(self) -> None:
        """Drop the marks of sockets whose namespace went quiet: their heads are out
        of the log by now, so no catch-up can bring those events again."""
        oldest = int((time.time() - self.broker.retention) * 1000)
        for namespace, marks in list(self._replayed.items()):
            for sid in [sid for sid, head in marks.items() if head[0] < oldest]:
                del marks[sid]
            if not marks:
                del self._replayed[namespace]

    async def revoke(self, jti: str, ttl: int) -> None:
        """Revoke a token everywhere and disconnect the sockets that use it."""
        await self.state.revoke(jti, ttl)
        await self.disconnect_revoked(jti, ttl)
        await self._publish({"t": "revoke", "j": jti, "ttl": ttl})

    async def share(self, namespace: str, event: str, args: list) -> None:
        """Send a broadcast to a whole namespace to the other instances, volatile
        (the Admin UI's /admin: hub/adapters/admin_ui.py); each delivers it through `shared`."""
        await self._publish({"t": "share", "n": namespace, "ev": event, "a": args})

    async def _append_batch(self, batches: list[list[dict]]) -> list[list[str] | None]:
        """The log append of several deliveries' entries: one append (on Redis, one
        script call) for all of them, in order. None for each while events are left
        behind (a batch before these failed): they must not overtake them."""
        if self._backlog:
            return [None] * len(batches)
        offsets = await self._append([entry for entries in batches for entry in entries])
        if offsets is None:
            return [None] * len(batches)
        out, start = [], 0
        for entries in batches:
            out.append(offsets[start:start + len(entries)])
            start += len(entries)
        return out

    async def _append(self, entries: list[dict], *, relay: bool = False, hold: bool = False) -> list[str] | None:
        """None if not appended: the bus is down, or direct appends are held (the
        relays are appending what was left behind)."""
        try:
            offsets = await self.broker.append(self.instance_id, entries, relay=relay, hold=hold)
            self.metrics.child(self.metrics.bus, "out", "ok").inc()
        except BrokerUnavailable as exc:
            # At once: the next batch must not go past these, and once the bus is
            # back the first relay pass holds everyone's direct appends.
            self._backlog = self._hold_next = self._failed = True
            self.metrics.child(self.metrics.bus, "out", "error").inc()
            log.error("could not append %d durable events; the outbox relay will: %s", len(entries), exc)
            return None
        if offsets is None:
            self._backlog = True
        return offsets

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
        elif kind == "share" and message.get("n") in self.shared:
            await self.shared[message["n"]](message["ev"], message["a"])

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
        skip_sid = entry["s"]
        if entry["ns"] in self._replayed and offset:
            skip_sid = self._skip_replayed(entry["ns"], offset, skip_sid)
        await self._emit_local(entry["ns"], entry["ev"], entry["d"], entry["r"], skip_sid, offset)

    async def _emit_local(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid,
                          offset: str | None = None) -> None:
        own = self.local_emitters.get((namespace, event))
        if own is not None:
            return await own(namespace, event, data, rooms, skip_sid, offset)
        args = (data, offset) if offset else data
        coalesced = self.coalescer.takes(namespace, event)
        if coalesced and not self.coalescer.current(namespace, event, data, durable=offset is not None):
            return  # older than an update already delivered here
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
                    reached += len(members) - (sum(sid in members for sid in skip_sid)
                                               if isinstance(skip_sid, list) else skip_sid in members)
            if reached:
                if coalesced and not offset:
                    await self.coalescer.emit(server, namespace, event, data, rooms, skip_sid)
                else:
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
        """Never dies silently: logs and carries on at the next tick. Runs every
        RELAY_EVERY, or at once when a delivery was left in the outbox."""
        loop = asyncio.get_running_loop()
        pruned = loop.time()
        while True:
            try:
                await asyncio.wait_for(self._relay_now.wait(), RELAY_EVERY)
            except asyncio.TimeoutError:
                pass
            self._relay_now.clear()
            try:
                if not await self._relay():
                    await asyncio.sleep(RELAY_EVERY)  # the bus is down: not once per delivery
                if loop.time() - pruned > PRUNE_EVERY:
                    pruned = loop.time()
                    self._prune_replayed()
                    async with self.db.transaction() as tx:
                        await outbox.prune(tx, PRUNE_AFTER)
                        await published.prune(tx, self.published_retention)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying")
                await asyncio.sleep(1.0)  # the database is down, say: not four tracebacks a second

    async def _relay(self) -> bool:
        """Append what was left in the outbox, oldest first. Out of backlog, only
        events older than RELAY_AFTER (their writer had time); finding any starts
        a backlog. In a backlog, everything, until a pass finds nothing more; then
        appends go direct again. A pass that appends what was left behind (stale
        events, the first pass after this instance's failure, a big backlog) holds
        direct appends on every instance for HOLD seconds, so that their newer
        events wait behind those. False if it could not (the bus is down, or
        another instance's relay holds the outbox)."""
        more = False
        while True:
            self._waiting = []  # committed before the claim below: the pass takes them
            hold = self._hold_next or more or not self._backlog
            done = await self._relay_batch(timedelta(0) if self._backlog else RELAY_AFTER, hold)
            if done is None:
                return False
            if hold and done != "none":
                self._hold_next = False
            more = done == "more"
            if more:
                continue
            if done == "some" and not self._backlog:
                self._backlog = True  # someone's events were left behind: drain, then go direct
                continue
            if self._backlog:
                await self._go_direct()
            return True

    async def _go_direct(self) -> None:
        """Leave the backlog. What was left in the outbox during the last pass goes
        first, in one append queued before any later delivery's (no await between
        the flag and the queue); if it cannot, the backlog goes on."""
        waiting, self._waiting = self._waiting, []
        self._backlog = False
        if waiting:
            if await self._appends.submit(waiting) is not None:
                self._published.extend(e["id"] for e in waiting)

    async def _relay_batch(self, older_than: timedelta, hold: bool, limit: int = 500) -> str | None:
        """Append one batch of unpublished events older than `older_than`, in id
        order: "none" left behind, "some", "more" (a full batch), None if it could not."""
        async with self.db.transaction() as tx:
            if not await outbox.lock_relay(tx):
                return None
            rows = await outbox.claim_stale(tx, older_than, limit)
            if not rows:
                return "none"
            entries = [{"ns": r.namespace, "ev": r.event, "d": r.data, "r": r.rooms, "s": r.skip_sid, "id": r.id}
                       for r in rows]
            # Events older than RELAY_AFTER were left behind (by an instance cut off
            # from Redis, say) whatever this instance's state: hold the others.
            hold = hold or aware(rows[0].created_at) < utcnow() - RELAY_AFTER
            try:
                offsets = await self._append(entries, relay=True, hold=hold)
            except Exception:
                # Something in the batch the bus refuses: find it, alone.
                offsets = await self._relay_each(tx, rows, entries, hold)
            else:
                if offsets is not None:
                    await outbox.remove_published(tx, [r.id for r in rows])
            if offsets is None:
                return None
        if len(rows) == limit:
            return "more"
        appended = sum(o is not None for o in offsets)
        if not appended:
            return "none"  # all in the log already: their writer's removal was late, nothing was left behind
        log.warning("relayed %d outbox events that were left behind", appended)
        return "some"

    async def _relay_each(self, tx, rows: list, entries: list[dict], hold: bool) -> list[str | None] | None:
        """Append the events one at a time, in order; one the bus refuses is set aside
        (logged once, counted), never retried: no single row may stall the relay.
        The offsets of those appended, or None when the bus became unavailable (or
        appends were held) before the last."""
        relayed: list[int] = []
        offsets: list[str | None] | None = []
        for row, entry in zip(rows, entries):
            try:
                got = await self._append([entry], relay=True, hold=hold)
            except Exception:
                log.exception("outbox event %d (%s %s) cannot be relayed; set aside", row.id, row.namespace,
                              row.event)
                await outbox.set_aside(tx, row.id)
                self.metrics.set_aside.inc()
                continue
            if got is None:
                offsets = None
                break
            relayed.append(row.id)
            offsets.extend(got)
        await outbox.remove_published(tx, relayed)
        return offsets
