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
  each. The socket's writer task writes its gathered frames before anything
  queued after them (HubWebSocket.send), so order holds whenever the flush runs.
* Writes never wait: a slow recipient's transport pauses; its frames still go
  straight into its (bounded, `buffer_limit`) transport buffer, and past that they
  queue until its writer has drained them.
* Long-polling clients, broadcasts with callbacks, and single packets sent by the
  server (connect, acks, pings) use python-socketio's normal path.
* Websocket permessage-deflate is off unless asked for (HUB_WS_COMPRESSION).

The internals reached here (python-engineio's socket queue and upgrade flags, its
aiohttp websocket driver, aiohttp's websocket writer and transport) are those of the
versions pinned in pyproject.toml; `check_internals()` verifies them when the
manager is attached, and the fast path turns itself off (with a warning) instead of
misbehaving if they ever change. tests/test_manager.py covers both paths.
"""
from __future__ import annotations

import asyncio
import logging
import time

import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

log = logging.getLogger("hub.manager")


def ws_frame(payload: bytes | str) -> bytes:
    """One unmasked, uncompressed server websocket frame (RFC 6455 §5.2)."""
    if isinstance(payload, str):
        data, opcode = payload.encode("utf-8"), 0x1
    else:
        data, opcode = bytes(payload), 0x2
    n = len(data)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + data


class HubWebSocket(eio_aiohttp.WebSocket):
    """python-engineio's aiohttp websocket driver with compression chosen by the hub,
    and remembered on its Engine.IO socket so the manager can write to it."""

    compress = False  # set per server by HubManager.set_server

    writer = raw = protocol = None
    manager = None  # the HubManager that gathers frames for this socket (set per server)

    def __init__(self, handler, server):
        super().__init__(handler, server)
        self.sending = 0  # writes in flight from the socket's writer task
        self.eio_socket = getattr(handler, "__self__", None)

    async def __call__(self, environ):
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                       compress=self.compress)
        await self._sock.prepare(request)
        self.environ = environ
        # Looked up once here, not per broadcast and recipient (None if aiohttp's
        # internals ever change: check_internals() has then turned the fast path off).
        writer = getattr(self._sock, "_writer", None)
        self.writer = writer
        self.raw = getattr(writer, "transport", None)
        self.protocol = getattr(writer, "protocol", None)
        if self.eio_socket is not None:
            self.eio_socket.hub_ws = self
        try:
            await self.handler(self)
        finally:
            if self.eio_socket is not None and getattr(self.eio_socket, "hub_ws", None) is self:
                self.eio_socket.hub_ws = None
        return self._sock

    async def send(self, message):
        # Frames the manager gathered for this socket go first: whatever the writer
        # task sends was queued after them.
        manager = self.manager
        if manager is not None and self.raw is not None:
            held = manager._pending.pop(self.raw, None)
            if held is not None and not self.raw.is_closing():
                self.raw.write(held if type(held) is bytes else b"".join(held))
        self.sending += 1
        try:
            await super().send(message)
        finally:
            self.sending -= 1

    def transport(self):
        """The transport to write a ready frame to, or None when this connection must
        go through its queue (compression negotiated, closing, or paused)."""
        writer, transport = self.writer, self.raw
        if (writer is None or writer.compress or writer._closing or transport is None
                or transport.is_closing() or self.protocol._paused):
            return None
        return transport


def check_internals() -> list[str]:
    """What of the reached-into internals is missing in the installed versions."""
    missing = []
    from aiohttp._websocket.writer import WebSocketWriter
    from engineio.async_socket import AsyncSocket

    for name in ("send_frame", "_write_websocket_frame"):
        if not hasattr(WebSocketWriter, name):
            missing.append(f"aiohttp WebSocketWriter.{name}")
    init = WebSocketWriter.__init__.__code__.co_names
    for name in ("protocol", "transport", "compress", "_closing"):
        if name not in init:
            missing.append(f"aiohttp WebSocketWriter.{name}")
    if not hasattr(WebSocketResponse, "_writer") and "_writer" not in WebSocketResponse.__init__.__code__.co_names:
        missing.append("aiohttp WebSocketResponse._writer")
    for name in ("_websocket_handler", "send", "poll", "check_ping_timeout"):
        if not hasattr(AsyncSocket, name):
            missing.append(f"engineio AsyncSocket.{name}")
    return missing


class HubManager(socketio.AsyncManager):
    """The hub's client manager; see the module docstring."""

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

    def set_server(self, server):
        super().set_server(server)
        missing = check_internals()
        if missing:
            self.fast = False
            log.warning("fast broadcast off: these internals changed: %s", ", ".join(missing))
        eio = server.eio
        if eio._async is not None and eio._async.get("websocket") is eio_aiohttp.WebSocket:
            driver = type("HubWebSocket", (HubWebSocket,),
                          {"compress": self.websocket_compression, "manager": self})
            eio._async = dict(eio._async, websocket=driver)
        elif self.fast:
            self.fast = False
            log.warning("fast broadcast off: the Engine.IO server does not use the aiohttp driver")

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
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event] + data).encode()
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
                    writer = ws.writer
                    if (writer is not None and not writer.compress and not writer._closing
                            and not tr.is_closing()
                            and (not ws.protocol._paused or tr.get_write_buffer_size() < self.buffer_limit)):
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
        socket afterwards is written by its writer task through HubWebSocket.send,
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
