"""Delivers server events to the sockets of every instance.

Durable events are appended to the broker's log (hub/delivery/relay.py: directly,
or by the outbox relay when they were left behind), which gives each its offset and
sends it to every instance, this one included; each instance delivers them in log
order with the offset as the last argument, once per event id.

Volatile events (typing, presence) are emitted here at once and sent to the other
instances without a log. Token revocations travel the same way (`announce_revoked`).

On a broker that routes (Redis), an event reaches only the instances with a socket
in one of its rooms: `interest` tells the broker which rooms this instance's sockets
are in, as they join and leave (hub/delivery/interest.py).

On this instance, an event reaches the Socket.IO servers' sockets (the plain way,
or another way registered for it: `deliver_locally`) and then the plain WebSocket
and SSE members (hub/adapters/gateways/members.py)."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Awaitable, Callable

from handlers.context import Outgoing
from handlers.registry import REGISTRY
from hub.backends.bus import Broker, BrokerUnavailable, Route, offset_key
from hub.delivery.coalescing import Coalescer
from hub.delivery.interest import Interest
from hub.delivery.local import LocalDelivery, to_sockets
from hub.delivery.records import (DurableEvent, Emitted, Logged, Revoked, Shared, Skip, VolatileEvent, decode,
                                  encode)
from hub.delivery.relay import OutboxRelay
from hub.adapters.gateways.members import REVOKED, Members

log = logging.getLogger("hub.delivery.fanout")

SEEN_CAPACITY = 200_000


class Fanout:
    def __init__(self, sio, broker: Broker, *, db, instance_id: str, connections, metrics,
                 published_retention: timedelta = timedelta(days=7)) -> None:
        self.sio = sio
        # Every Socket.IO server of this instance (the JSON one first; the msgpack
        # endpoint's is added by the app): events reach clients of each parser.
        self.servers = []
        # Plain WebSocket and SSE connections (hub/gateways): rooms of their own, fed
        # by the same deliveries.
        self.members = Members()
        self.broker = broker
        # The rooms this instance's sockets are in, for a broker that routes; the
        # app hands it to each Socket.IO server's manager and to `members`.
        self.interest = Interest(broker) if broker.routed else None
        self.members.watcher = self.interest
        self.add_server(sio)
        self.db = db
        self.instance_id = instance_id
        self.connections = connections
        self.metrics = metrics
        self.relay = OutboxRelay(broker, db=db, instance_id=instance_id, metrics=metrics,
                                 published_retention=published_retention, prune=self._prune_replayed)
        self._seen: OrderedDict[int, None] = OrderedDict()  # event ids delivered here
        # namespace -> {sid: the newest offset a recovery replayed to it}. The bus may
        # still bring this instance events up to there (it lagged behind the log, or
        # catches up after a loss of its own); the socket had them from the replay.
        self._replayed: dict[str, dict[str, tuple[int, int]]] = {}
        # Parts of the instance itself that act on durable events (not sockets): the
        # widget origins follow assistant:changed the moment any instance commits one.
        self._listeners: dict[tuple[str, str], list[Callable[[dict], Awaitable[None]]]] = {}
        # (namespace, event) -> how this instance sends it to its own Socket.IO
        # sockets, when not the plain way (`deliver_locally`).
        self._local: dict[tuple[str, str], LocalDelivery] = {}
        # State updates held per slow socket (registered with `coalesce_by`).
        self.coalescer = Coalescer({key: spec.coalesce_by for key, spec in REGISTRY.events.items()
                                    if spec.coalesce_by})
        for namespace, event in self.coalescer.events:
            self.deliver_locally(namespace, event, self.coalescer.deliver)
        # Namespace -> how this instance delivers another's broadcast to it (`share`).
        self.shared: dict[str, Callable[[str, list], Awaitable[None]]] = {}
        # What this instance does with another's token revocation (`announce_revoked`):
        # set by the revocation service (hub/delivery/revocation.py).
        self.on_revoked: Callable[[str, int], Awaitable[None]] | None = None

    def add_server(self, server) -> None:
        """Deliver to this Socket.IO server's sockets too; its rooms count in `interest`."""
        server.manager.room_watcher = self.interest
        self.servers.append(server)

    def listen(self, namespace: str, event: str, callback: Callable[[dict], Awaitable[None]]) -> None:
        """Call `callback(data)` on this instance for every such durable event, once each."""
        self._listeners.setdefault((namespace, event), []).append(callback)
        self.broker.everywhere(namespace, event)

    def deliver_locally(self, namespace: str, event: str, how: LocalDelivery) -> None:
        """Send this event to this instance's Socket.IO sockets with `how` (one per
        event: coalescing per socket, say), instead of the plain broadcast."""
        if (namespace, event) in self._local:
            raise ValueError(f"{namespace} {event} is already delivered another way")
        self._local[(namespace, event)] = how

    async def start(self) -> None:
        await self.broker.start(self._on_message)
        self.relay.start()

    async def stop(self) -> None:
        await self.relay.stop()
        await self.coalescer.stop()
        if self.interest is not None:
            await self.interest.stop()
        await self.relay.remove()  # what this instance published must not be published again

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
            # Each to the instances with a socket in one of its rooms.
            sending = [self._send(Emitted(self.instance_id, [
                VolatileEvent(e.namespace, e.event, e.data, e.rooms, e.skip_sid)]), (e.namespace, e.rooms))
                for e in volatile]
            try:
                for ev in volatile:
                    await self._emit_local(ev.namespace, ev.event, ev.data, ev.rooms, ev.skip_sid)
            finally:
                for each in sending:
                    await self._sent(each)
        if durable:
            offsets = await self.relay.append([DurableEvent(e.namespace, e.event, e.data, e.rooms, e.skip_sid,
                                                            e.event_id) for e in durable])
            if offsets is not None:
                by_id = {e.event_id: o for e, o in zip(durable, offsets)}
                return [by_id.get(e.event_id) for e in events]
        return [None] * len(events)

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

    async def announce_revoked(self, jti: str, ttl: int) -> None:
        """Tell the other instances that the token `jti` is revoked for `ttl` seconds,
        volatile; each hands it to its `on_revoked`."""
        await self._publish(Revoked(self.instance_id, jti, ttl))

    async def share(self, namespace: str, event: str, args: list) -> None:
        """Send a broadcast to a whole namespace to the other instances, volatile
        (the Admin UI's /admin: hub/adapters/admin_ui.py); each delivers it through `shared`."""
        await self._publish(Shared(self.instance_id, namespace, event, args))

    async def _publish(self, message: Emitted | Revoked | Shared) -> None:
        await self._sent(self._send(message))

    def _send(self, message: Emitted | Revoked | Shared, to: Route = None):
        """Start publishing (to every instance, unless `to` names rooms); `_sent`
        awaits the outcome."""
        try:
            return self.broker.publish_soon(encode(message), to)
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

    async def _on_message(self, raw: dict) -> None:
        message = decode(raw)
        if isinstance(message, Logged):
            if message.entries and message.entries[0].offset:
                # The offset starts with the append's time (ms): how long it took to get here.
                self.metrics.bus_lag.observe(
                    max(0.0, time.time() - offset_key(message.entries[0].offset)[0] / 1000))
            for offset, event in message.entries:
                await self._deliver_logged(event, offset)
            return
        if raw.get("o") == self.instance_id:
            return
        self.metrics.child(self.metrics.bus, "in", "ok").inc()
        if isinstance(message, Emitted):
            for e in message.events:
                await self._emit_local(e.namespace, e.event, e.data, e.rooms, e.skip_sid)
        elif isinstance(message, Revoked) and self.on_revoked is not None:
            await self.on_revoked(message.jti, message.ttl)
        elif isinstance(message, Shared) and message.namespace in self.shared:
            await self.shared[message.namespace](message.event, message.args)

    async def _deliver_logged(self, event: DurableEvent, offset: str | None) -> None:
        """Once per event id on this instance, whichever path brings it first."""
        if event.event_id in self._seen:
            return
        self._seen[event.event_id] = None
        if len(self._seen) > SEEN_CAPACITY:
            self._seen.popitem(last=False)
        # Listeners first: a client told of a change finds this instance already acting on it.
        for callback in self._listeners.get((event.namespace, event.event), ()):
            try:
                await callback(event.data)
            except Exception:
                log.exception("a listener of %s %s failed", event.namespace, event.event)
        skip_sid = event.skip_sid
        if event.namespace in self._replayed and offset:
            skip_sid = self._skip_replayed(event.namespace, offset, skip_sid)
        await self._emit_local(event.namespace, event.event, event.data, event.rooms, skip_sid, offset)

    async def _emit_local(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid: Skip,
                          offset: str | None = None) -> None:
        """To this instance's Socket.IO sockets (the plain way, or the event's own),
        then to its plain WebSocket and SSE members: the same events, in the same order."""
        how = self._local.get((namespace, event), to_sockets)
        total = await how(self.servers, namespace, event, data, rooms, skip_sid, offset)
        if total is None:
            return  # not for this instance's sockets at all (superseded)
        if namespace in self.members.rooms:
            total += self.members.emit(namespace, event, data, rooms, skip_sid, offset)
        if total:
            self.metrics.child(self.metrics.deliveries, namespace).inc(total)

    async def disconnect_token(self, jti: str) -> None:
        """Disconnect this instance's sockets (of every kind) that use the token `jti`."""
        for namespace, sid in self.connections.using(jti):
            member = self.members.by_sid.get(sid)
            if member is not None:
                member.close(REVOKED, "token revoked")
                continue
            for server in self.servers:
                await server.disconnect(sid, namespace=namespace)
