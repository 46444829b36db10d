"""Fast broadcast for python-socketio: a `client_manager` (socketio.AsyncManager,
the library's public extension point) that encodes each broadcast once and writes
the ready websocket frame straight to each recipient that can take it.

Why: python-socketio's own AsyncManager.emit creates one task per recipient per
packet, and each task goes through the socket's send queue and a writer task, and
python-engineio's aiohttp driver turns permessage-deflate on, so every frame is
compressed once per recipient. That is 5-8x slower than Node's socket.io on the same
machine (docs/performance.md).

What this module does, and the guarantees it keeps:

* A broadcast without a callback is encoded once by the Socket.IO packet class. From
  that it builds, once per wire format,
  - the websocket frames (header + payload bytes, text or binary), and
  - Engine.IO packets for the queued path: one set for websocket sockets (raw
    bytes) and a separate set for long-polling sockets (base64 for binary parts).
  python-engineio caches a packet's encoding on the packet object, whatever the
  transport asked for; sharing one packet between a websocket and a polling
  recipient would send raw bytes on the polling one (issue 6, item 5). The two
  sets never mix.
* A frame is written directly to the transport of a recipient whose socket is
  upgraded to websocket, has nothing queued, no write in flight, no compression
  negotiated and an open transport. Anything else goes through the socket's queue
  as before, so the frames of one connection keep their order: a direct write
  happens only when everything queued before it is already written.
* Direct frames for one socket are gathered and written by one callback, one write
  per socket: at the end of the loop iteration (`call_soon`), or, with a
  `flush_window`, no sooner than that long after the previous flush. Several
  broadcasts in one iteration then cost one system call per recipient, not one
  each. The socket's writer writes its gathered frames before anything queued
  after them (LeanWebSocket._write, or HubWebSocket.send on aiohttp's driver), so
  order holds whenever the flush runs.
* Writes never wait: a slow recipient's transport pauses; its frames still go
  straight into its (bounded, `buffer_limit`) transport buffer, and past that they
  queue until its writer has drained them.
* Long-polling clients, broadcasts with callbacks, and single packets sent by the
  server (connect, acks, pings) use python-socketio's normal path.
* Websocket permessage-deflate is off unless asked for (HUB_WS_COMPRESSION).


The internals reached here (python-engineio's socket queue and upgrade flags, its
aiohttp websocket driver table, aiohttp's websocket writer and transport) are
listed in engine/internals.py and checked when the manager is attached: the fast
path, or the websocket handover (engine/websocket.py), turns itself off with a
warning if one is missing; `engine.internals.check()` at the hub's start fails
loudly first.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Protocol

import socketio
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from engine import internals
from engine.frames import ws_frame
from engine.driver import HubWebSocket
from engine.engineio_server import ProtocolEngineIOServer
from engine.websocket import HandoverHook, LeanWebSocket

log = logging.getLogger("hub.manager")


def encode_event(packet_class, namespace: str, data: list):
    """An EVENT packet's encoding. python-socketio scans every payload for bytes
    (a recursive walk in Python, the largest cost of encoding a small event); the
    JSON encoder meets bytes anyway, so try without the scan first."""
    try:
        return packet_class(sio_packet.EVENT, namespace=namespace, data=data, binary=False).encode()
    except TypeError:  # bytes inside: a binary event with attachments
        return packet_class(sio_packet.EVENT, namespace=namespace, data=data).encode()

class RoomWatcher(Protocol):
    """Told when a named room of a manager gains its first socket or loses its
    last; a join waits for `ready` (the hub's: hub/delivery/interest.py)."""

    def occupied(self, namespace: str, room: str) -> None: ...

    def vacated(self, namespace: str, room: str) -> None: ...

    def ready(self, namespace: str, room: str) -> Awaitable[None]: ...


class HubManager(socketio.AsyncManager):
    """The hub's client manager; see the module docstring."""

    # Told of the named rooms (not a socket's own sid room) as they fill and empty.
    room_watcher: RoomWatcher | None = None

    def __init__(self, *, websocket_compression: bool = False, buffer_limit: int = 128 * 1024,
                 flush_window: float = 0.0) -> None:
        super().__init__()
        self.websocket_compression = websocket_compression
        self.fast = True
        # Counters of recipients by path, for metrics and tests.
        self.direct_writes = 0
        self.queued_writes = 0
        # Frames written "directly" wait here until the end of the loop iteration,
        # so that several broadcasts in one iteration cost one write per socket.
        self._pending: dict = {}  # transport -> frames (bytes, or a list of them)
        self.flushes = 0
        # Flushes are at least this far apart (seconds). 0: at the end of the loop
        # iteration. A few ms make several broadcasts share one write per socket at
        # high rates; on the 500-member benchmark 2 ms did not measurably help (the
        # sender's operation dominates there), so it is off by default.
        self.flush_window = flush_window
        self._last_flush = 0.0
        # A paused transport (the client reads slower than we write) still takes
        # frames directly until this many bytes wait in its buffer; past that its
        # frames go through the socket's queue, whose writer waits for the drain.
        self.buffer_limit = buffer_limit
        # Called with the request of each websocket LeanWebSocket takes over from
        # aiohttp; what it returns is released when that connection ends (the hub
        # keeps the request's per-address connection slot this way).
        self.on_handover: HandoverHook | None = None
        # namespace -> sid -> the rooms it is in (None and its own sid room included),
        # in join order: python-socketio finds a socket's rooms by walking every room
        # of the namespace, on every disconnect and `rooms(sid)`, a cost per socket
        # that grows with the number of connections (each has its own rooms).
        self._joined: dict[str, dict[str, list]] = {}

    def set_server(self, server):
        super().set_server(server)
        missing = internals.missing("broadcast")
        if missing:
            self.fast = False
            log.warning("fast broadcast off: these internals changed: %s", ", ".join(missing))
        eio = server.eio
        if eio._async is not None and eio._async.get("websocket") is eio_aiohttp.WebSocket:
            driver = type("HubWebSocket", (HubWebSocket,),
                          {"compress": self.websocket_compression, "manager": self})
            handover = internals.missing("handover")
            if not isinstance(eio, ProtocolEngineIOServer):
                pass  # LeanWebSocket needs the engine's sessions (attach) and task owner
            elif not handover:
                driver = type("LeanWebSocket", (LeanWebSocket,),
                              {"__slots__": (), "compress": self.websocket_compression, "manager": self,
                               "fallback_class": driver})
            else:  # pragma: no cover - aiohttp changed
                log.warning("lean websockets off: aiohttp internals changed: %s", ", ".join(handover))
            eio._async = dict(eio._async, websocket=driver)
        elif self.fast:
            self.fast = False
            log.warning("fast broadcast off: the Engine.IO server does not use the aiohttp driver")

    # --- rooms, with the index of each socket's rooms ----------------------------------

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        watcher = self.room_watcher
        fresh = watcher is not None and room is not None and room != sid and room not in self.rooms.get(namespace, ())
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if fresh:
            watcher.occupied(namespace, room)
        joined = self._joined.setdefault(namespace, {}).setdefault(sid, [])
        if room not in joined:
            joined.append(room)

    def basic_leave_room(self, sid, namespace, room):
        watcher = self.room_watcher
        held = watcher is not None and room is not None and room != sid and room in self.rooms.get(namespace, ())
        super().basic_leave_room(sid, namespace, room)
        if held and room not in self.rooms.get(namespace, ()):
            watcher.vacated(namespace, room)
        by_sid = self._joined.get(namespace)
        joined = by_sid.get(sid) if by_sid else None
        if joined and room in joined:
            joined.remove(room)
            if not joined:
                del by_sid[sid]
                if not by_sid:
                    del self._joined[namespace]

    async def enter_room(self, sid, namespace, room, eio_sid=None):
        """Joined once the watcher is ready for the room: what is sent to it from
        then on reaches the socket."""
        self.basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if self.room_watcher is not None and room is not None and room != sid:
            await self.room_watcher.ready(namespace, room)

    def get_rooms(self, sid, namespace):
        return [room for room in self._joined.get(namespace, {}).get(sid, ()) if room is not None]

    def basic_disconnect(self, sid, namespace, **kwargs):
        """python-socketio's (5.18), with the socket's rooms taken from the index
        instead of a walk over every room of the namespace."""
        for room in list(self._joined.get(namespace, {}).get(sid, ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    # --- broadcasting ---------------------------------------------------------------------

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        if callback or not self.fast:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                      callback=callback, to=to, **kwargs)
        room = to or room
        if namespace not in self.rooms:
            return
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        if not isinstance(skip_sid, list):
            skip_sid = [skip_sid]
        encoded = encode_event(self.server.packet_class, namespace, [event] + data)
        if not isinstance(encoded, list):
            encoded = [encoded]
        await self.broadcast(encoded, self.get_participants(namespace, room), skip_sid)

    async def broadcast(self, encoded: list, participants, skip_sid=()) -> None:
        """Send the encoded Socket.IO packet parts to (sid, eio_sid) participants.

        The loop runs once per recipient of every broadcast: it allocates nothing
        on the direct path and looks up only what it must."""
        frames = b"".join(ws_frame(eio_packet.Packet(eio_packet.MESSAGE, p).encode()) for p in encoded)
        ws_pkts = poll_pkts = None
        sockets = self.server.eio.sockets
        pending = self._pending
        was_empty = not pending
        slow = []
        now = time.time()
        direct = queued = 0
        for sid, eio_sid in participants:
            if sid in skip_sid:
                continue
            s = sockets.get(eio_sid)
            if s is None or s.closed or s.closing:
                continue
            if s.upgrading:
                # Mid-upgrade: whichever transport ends up writing these packets
                # encodes them, so they are this socket's own.
                pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
            elif s.upgraded:
                ws = getattr(s, "hub_ws", None)
                if ws is not None and not ws.sending and s.queue.empty():
                    tr = ws.raw
                    held = pending.get(tr)
                    if held is not None:
                        if type(held) is list:
                            held.append(frames)
                        else:
                            pending[tr] = [held, frames]
                        direct += 1
                        continue
                    if (ws.open and not tr.is_closing()
                            and (not ws.paused or tr.get_write_buffer_size() < self.buffer_limit)):
                        pending[tr] = frames
                        direct += 1
                        continue
                if ws_pkts is None:
                    ws_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
                pkts = ws_pkts
            else:
                if poll_pkts is None:
                    poll_pkts = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in encoded]
                pkts = poll_pkts
            queued += 1
            last_ping = s.last_ping
            if last_ping and now - last_ping > self.server.eio.ping_timeout:
                # Overdue pong: the socket's own send closes it; keep that behaviour.
                slow.append(self._send_slow(s, pkts))
                continue
            for p in pkts:
                s.queue.put_nowait(p)
        if was_empty and pending:
            loop = asyncio.get_running_loop()
            due = self._last_flush + self.flush_window
            if due <= loop.time():
                loop.call_soon(self._flush)
            else:
                loop.call_at(due, self._flush)
        self.direct_writes += direct
        self.queued_writes += queued
        if slow:
            await asyncio.gather(*slow)
        elif queued:
            # Let the writers and pending long-polls take what was queued before the
            # caller's next emit, as python-socketio's own emit does (its tasks yield).
            await asyncio.sleep(0)

    def _flush(self) -> None:
        """Write the frames the broadcasts gathered since the last flush, one write
        per socket.

        Order per connection holds: frames are gathered only for sockets whose
        queue was empty with no write in flight, and whatever is queued for such a
        socket afterwards is written by its writer (LeanWebSocket._write, HubWebSocket.send),
        which first writes the socket's gathered frames."""
        pending, self._pending = self._pending, {}
        self.flushes += 1
        self._last_flush = asyncio.get_running_loop().time()
        for transport, frames in pending.items():
            if transport.is_closing():
                continue
            try:
                transport.write(frames if type(frames) is bytes else b"".join(frames))
            except Exception:  # a broken transport: its reader notices and closes the session
                log.debug("direct write failed", exc_info=True)

    @staticmethod
    async def _send_slow(s, pkts) -> None:
        for p in pkts:
            await s.send(p)


def backlogged(server, eio_sid: str) -> bool:
    """Whether the client of a socket of `server` has not taken what was sent to it
    yet: packets wait in its Engine.IO queue (a long-poll not fetched, a websocket
    writer waiting for the drain), a write of its websocket's writer is in flight, or
    its websocket transport is paused (it reads slower than we write). A gone or
    closed socket is not behind: there is nothing to hold for it. The hub's
    coalescing holds what such a socket would otherwise queue (superseded updates,
    deltas to concatenate)."""
    s = server.eio.sockets.get(eio_sid)
    if s is None or s.closed:
        return False
    if not s.queue.empty():
        return True
    ws = getattr(s, "hub_ws", None)
    return ws is not None and (ws.sending > 0 or bool(ws.paused))

