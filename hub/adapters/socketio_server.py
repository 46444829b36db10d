"""The hub's Socket.IO server class: the engine's protocol-fixed server
(engine.ProtocolServer) plus what the hub's namespace adapter and connection
recovery need: the private session id in the CONNECT reply, metrics by transport,
dropping a connection as a network drop would, and the order of the events held for
a recovering socket. Its Engine.IO server answers with the hub's contract errors.
Nothing here reaches a private name of python-socketio (engine/ does)."""
from __future__ import annotations

import json

from engine import WANTS_ACK, HubManager, ProtocolEngineIOServer, ProtocolServer
from handlers.errors import PayloadTooLarge
from hub.backends.bus import offset_key
from hub.adapters.http.guard import keep_slot
from hub.delivery.recovery import after_head

__all__ = ["WANTS_ACK", "HubEngineIOServer", "HubServer"]


class HubEngineIOServer(ProtocolEngineIOServer):
    def too_large_body(self) -> bytes:
        """The contract's `payload_too_large` error."""
        error = PayloadTooLarge(f"a request larger than {self.max_http_buffer_size} bytes").body()
        return json.dumps({"error": error}).encode()


class HubServer(ProtocolServer):  # engine/socketio_server.py: the protocol fixes of issue 6
    engineio_server_class = HubEngineIOServer

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pids: dict[tuple[str, str], str] = {}  # (namespace, sid) -> pid, until CONNECT is sent
        if isinstance(self.manager, HubManager):
            # A websocket the engine takes over from aiohttp keeps the request's
            # per-address connection slot (hub.adapters.http.guard) until it ends.
            self.manager.on_handover = keep_slot

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
        held = self.held_events(sid, namespace)
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
