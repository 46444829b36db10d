"""The hub's Socket.IO server class: the protocol-fixed server of hub/protocol.py,
plus what the generic adapter and connection recovery need that python-socketio's
public API does not give. python-socketio is pinned in pyproject.toml for this."""
from __future__ import annotations

import contextvars

from socketio import packet as sio_packet

from hub.broker import offset_key
from hub.protocol import ProtocolServer
from hub.recovery import after_head

# True while handling an event whose sender asked for an ack. Each event runs in
# its own task (async_handlers), so the value belongs to that one event.
WANTS_ACK: contextvars.ContextVar[bool] = contextvars.ContextVar("wants_ack", default=True)


class HubServer(ProtocolServer):  # hub/protocol.py: the protocol fixes of issue 6
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pids: dict[tuple[str, str], str] = {}  # (namespace, sid) -> pid, until CONNECT is sent

    async def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):
        WANTS_ACK.set(id is not None)
        if id is None or not getattr(server.namespace_handlers.get(namespace), "json_replies", False):
            return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        # python-socketio's own, less its recursive search of every reply for bytes:
        # an operation's reply is dumped in JSON mode, so it has none.
        reply = await server._trigger_event(data[0], namespace, sid, *data[1:])
        if reply != self.not_handled:
            await server._send_packet(eio_sid, self.packet_class(
                sio_packet.ACK, namespace=namespace, id=id, data=[] if reply is None else [reply], binary=False))

    def wants_ack(self) -> bool:
        """Whether the event being handled (in this task) was sent with an ack id:
        without one, a failure is told to the socket as an `error` event instead."""
        return WANTS_ACK.get()

    def offer_pid(self, namespace: str, sid: str, pid: str) -> None:
        """Send `pid` in the CONNECT reply of socket `sid` of `namespace`."""
        self.pids[(namespace, sid)] = pid

    def connect_reply(self, sid, namespace) -> dict:
        """CONNECT data with the private session id the client recovers with."""
        reply = super().connect_reply(sid, namespace)
        pid = self.pids.pop((namespace or "/", sid), None)
        if pid:
            reply["pid"] = pid
        return reply

    def transports(self) -> dict[tuple[str, str], int]:
        """Connected sockets by (namespace, transport), for the metrics: read from the
        manager's rooms (room None holds every socket of a namespace) and the Engine.IO
        sockets' `upgraded` flag (set for websocket connections, upgraded or direct)."""
        counts: dict[tuple[str, str], int] = {}
        for namespace, rooms in self.manager.rooms.items():
            for eio_sid in (rooms.get(None) or {}).values():
                socket = self.eio.sockets.get(eio_sid)
                key = (namespace, "websocket" if socket is not None and socket.upgraded else "polling")
                counts[key] = counts.get(key, 0) + 1
        return counts

    async def drop_connection(self, sid: str, namespace: str) -> None:
        """Close the Engine.IO connection under a socket as a network drop would, after
        what is queued for it: clients reconnect by themselves (every namespace on
        that connection) and the sessions are kept for recovery. Engine.IO's public
        `disconnect` would end the sessions instead (a server disconnect)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
        eio_socket = self.eio.sockets.get(eio_sid) if eio_sid else None
        if eio_socket is not None:
            await eio_socket.close(wait=False, reason=self.eio.reason.TRANSPORT_CLOSE)

    def settle_held(self, sid: str, namespace: str, replayed: set[str], head: str | None) -> None:
        """While a recovering socket connects, replayed and live events are held for
        it (item 6 of docs/protocol.md). Put them in offset order, once each; a live
        event up to `head` (the newest offset the replay read) that is not among the
        `replayed` offsets was not for this socket (its own, say), and is dropped."""
        held = self._connecting.get(namespace or "/", {}).get(sid)
        if not held:
            return
        by_offset, volatile = {}, []
        for item in held:
            data = item[1]
            if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], str):
                offset = data[1]
                if offset in replayed or after_head(offset, head):
                    by_offset.setdefault(offset, item)
            else:
                volatile.append(item)
        held[:] = [by_offset[o] for o in sorted(by_offset, key=offset_key)] + volatile
