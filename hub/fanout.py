"""Delivers server events to sockets on this instance and, through the broker, on
every other instance; carries token revocations the same way."""
from __future__ import annotations

import logging

from handlers.context import Outgoing
from hub.broker import Broker, BrokerUnavailable

log = logging.getLogger("hub.fanout")


class Fanout:
    def __init__(self, sio, broker: Broker, *, instance_id: str, connections, state, metrics) -> None:
        self.sio = sio
        # Every Socket.IO server of this instance (the JSON one first; the msgpack
        # endpoint's is appended by the app): events reach clients of each parser.
        self.servers = [sio]
        self.broker = broker
        self.instance_id = instance_id
        self.connections = connections
        self.state = state
        self.metrics = metrics

    async def start(self) -> None:
        await self.broker.start(self._on_message)

    async def deliver(self, events: list[Outgoing]) -> None:
        """Emit locally at once, then hand the batch to the other instances."""
        if not events:
            return
        for ev in events:
            await self._emit_local(ev.namespace, ev.event, ev.data, ev.rooms, ev.skip_sid)
        await self._publish({"t": "emit", "e": [[e.namespace, e.event, e.data, e.rooms, e.skip_sid] for e in events]})

    async def revoke(self, jti: str, ttl: int) -> None:
        """Revoke a token everywhere and disconnect the sockets that use it."""
        await self.state.revoke(jti, ttl)
        await self._disconnect(jti, ttl)
        await self._publish({"t": "revoke", "j": jti, "ttl": ttl})

    async def _publish(self, message: dict) -> None:
        message["o"] = self.instance_id
        try:
            await self.broker.publish(message)
            self.metrics.bus.labels("out", "ok").inc()
        except BrokerUnavailable as exc:
            self.metrics.bus.labels("out", "error").inc()
            log.error("could not publish to other instances: %s", exc)

    async def _on_message(self, message: dict) -> None:
        if message.get("o") == self.instance_id:
            return
        self.metrics.bus.labels("in", "ok").inc()
        kind = message.get("t")
        if kind == "emit":
            for namespace, event, data, rooms, skip_sid in message["e"]:
                await self._emit_local(namespace, event, data, rooms, skip_sid)
        elif kind == "revoke":
            await self._disconnect(message["j"], message["ttl"])

    async def _emit_local(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid) -> None:
        total = 0
        for server in self.servers:
            ns_rooms = server.manager.rooms.get(namespace, {})
            reached = sum(len(ns_rooms[r]) for r in rooms if r in ns_rooms)
            if reached:
                await server.emit(event, data, to=rooms, namespace=namespace, skip_sid=skip_sid)
                total += reached
        if total:
            self.metrics.deliveries.labels(namespace).inc(total)

    async def _disconnect(self, jti: str, ttl: int) -> None:
        self.state.remember_revoked(jti, ttl)
        for namespace, sid in self.connections.using(jti):
            for server in self.servers:
                await server.disconnect(sid, namespace=namespace)
