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
aiohttp websocket driver, aiohttp's websocket writer and transport, and aiohttp's
request handler for the websocket handover of `LeanWebSocket`) are those of the
versions pinned in pyproject.toml; `check_internals()` and `check_handover()` verify
them when the manager is attached, and the fast path or the handover turns itself
off (with a warning) instead of misbehaving if they ever change.
tests/test_manager.py and tests/test_lean_websocket.py cover them.

`AdminUIManager` (the Socket.IO Admin UI, hub/adapters/admin_ui.py) pops the `_timestamps`
entry python-socketio's instrument() keeps on the manager per connected socket, for
connections refused by their namespace, which instrument() never removes; it also
relies on the shapes of instrument()'s /admin events (`redacted`).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

import socketio
from aiohttp import web
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

from hub.adapters.http.guard import keep_slot
from hub.protocol import log_oversized

try:  # aiohttp's C unmasking (its pure-Python one otherwise)
    from aiohttp._websocket.helpers import websocket_mask
except ImportError:  # pragma: no cover - aiohttp moved it
    def websocket_mask(mask: bytes, data: bytearray) -> None:
        n = len(data)
        data[:] = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")

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


def ready_transport(ws: WebSocketResponse) -> Callable[[], asyncio.Transport | None]:
    """For a prepared aiohttp websocket (the plain gateways' sockets,
    hub/adapters/gateways/members.py): a function answering the transport a ready, uncompressed
    frame may be written to right now, or None (closing or paused). Always None when
    the connection is compressed or aiohttp's internals changed (check_internals).
    The writer, its protocol and transport are fixed once the websocket is prepared,
    so they are looked up once, not on every broadcast."""
    writer = getattr(ws, "_writer", None)
    protocol = getattr(writer, "protocol", None)
    transport = getattr(writer, "transport", None)
    if (transport is None or getattr(writer, "compress", True) or not hasattr(writer, "_closing")
            or not hasattr(protocol, "_paused")):
        return lambda: None

    def ready() -> asyncio.Transport | None:
        if writer._closing or protocol._paused or transport.is_closing():
            return None
        return transport

    return ready


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

    @property
    def open(self) -> bool:
        """Frames may be written straight to `raw` (no compression, not closing)."""
        writer = self.writer
        return writer is not None and not writer.compress and not writer._closing

    @property
    def paused(self) -> bool:
        return self.protocol._paused

    def transport(self):
        """The transport to write a ready frame to, or None when this connection must
        go through its queue (compression negotiated, closing, or paused)."""
        writer, transport = self.writer, self.raw
        if (writer is None or writer.compress or writer._closing or transport is None
                or transport.is_closing() or self.protocol._paused):
            return None
        return transport


def encode_event(packet_class, namespace: str, data: list):
    """An EVENT packet's encoding. python-socketio scans every payload for bytes
    (a recursive walk in Python, the largest cost of encoding a small event); the
    JSON encoder meets bytes anyway, so try without the scan first."""
    try:
        return packet_class(sio_packet.EVENT, namespace=namespace, data=data, binary=False).encode()
    except TypeError:  # bytes inside: a binary event with attachments
        return packet_class(sio_packet.EVENT, namespace=namespace, data=data).encode()


_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(request) -> bytes | None:
    """The Sec-WebSocket-Accept value for a valid RFC 6455 upgrade request without
    extensions we would take, or None (aiohttp then answers it, as before)."""
    h = request.headers
    if request.method != "GET" or h.get("Upgrade", "").lower() != "websocket" or \
            "upgrade" not in [t.strip() for t in h.get("Connection", "").lower().split(",")] or \
            h.get("Sec-WebSocket-Version") != "13":
        return None
    key = h.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except ValueError:
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())


class _HandedOver(web.StreamResponse):
    """What the aiohttp handler returns for a connection the hub took over: aiohttp
    writes nothing more on it (the 101 is sent, the websocket is ours)."""

    async def prepare(self, request):
        return None

    async def write_eof(self, data=b""):
        return None


class LeanWebSocket(asyncio.Protocol):
    """The hub's websocket driver: after the handshake, the connection leaves aiohttp
    (its request handler and its two tasks end, the parsed request is freed) and
    this object is the transport's protocol. It parses client frames itself,
    hands messages to its Engine.IO session, and writes the session's queue
    straight to the transport. An idle connection then costs this object, the
    session and the transport: no task, no timer, no aiohttp request.

    * Reads: messages go to an inbox; a task drains it only while there is
      something to handle (one at a time: order holds), and ends when it is empty.
    * Writes: the session's PacketQueue calls `_schedule_flush` on put; the flush
      (once per loop iteration) writes the manager's gathered frames for this
      connection first, then the queued packets, in one write. While the
      transport is paused (slow reader), packets wait in the queue.
    * Before `attach` (the upgrade probe exchange), `wait`/`send`/`close` work as
      in python-engineio's aiohttp driver.
    * Compression (HUB_WS_COMPRESSION) on and offered by the client, or a
      handshake this class does not take: the aiohttp driver (`fallback_class`)
      serves the connection as before.

    Reached into (checked by check_internals): aiohttp's RequestHandler
    `_message_tail`, `_paused`, `transport` and `connection_lost`."""

    __slots__ = ("handler", "server", "eio_socket", "transport", "raw", "inbox", "inbox_bytes", "waiter", "buf",
                 "frag", "frag_op", "attached", "draining", "paused", "open", "closing", "lost", "flushing",
                 "close_timer", "reading_paused", "handed_over", "environ", "slot")

    compress = False  # set per server by HubManager.set_server
    manager = None
    fallback_class = None  # the aiohttp driver to use when this one cannot take the connection
    sending = 0  # the manager's check: no write of this driver is ever in flight
    close_timeout = 5.0  # seconds the peer has to answer our close frame
    inbox_limit = 64  # messages waiting to be handled before reading pauses
    # ... or this many bytes of them, in units of the server's packet limit
    # (max_http_buffer_size): with the frame being read, a connection holds at most
    # about three packets of unhandled input (issue 18, item 1).
    inbox_packets = 2

    def __init__(self, handler, server):
        self.handler = handler
        self.server = server
        self.eio_socket = getattr(handler, "__self__", None)
        self.transport = self.raw = self.waiter = self.frag = self.close_timer = self.environ = None
        self.inbox = []
        self.inbox_bytes = 0
        self.slot = None  # the per-address connection slot (hub.adapters.http.guard), released when the connection ends
        self.buf = b""
        self.frag_op = 0
        self.attached = self.draining = self.paused = self.open = self.closing = self.lost = False
        self.flushing = self.reading_paused = self.handed_over = False

    # -- handshake --------------------------------------------------------------------

    async def __call__(self, environ):
        request = environ["aiohttp.request"]
        # Compression is aiohttp's: a client offering it, when the hub allows it,
        # gets aiohttp's driver.
        offers = "permessage-deflate" in request.headers.get("Sec-WebSocket-Extensions", "").lower()
        accept = None if self.compress and offers else ws_accept(request)
        rh, tr = request.protocol, request.transport
        if accept is None or rh is None or tr is None or getattr(rh, "_manager", None) is None \
                or rh._manager.handler_cancellation or not hasattr(tr, "set_protocol"):
            return await self.fallback_class(self.handler, self.server)(environ)
        tail, rh._message_tail = rh._message_tail, b""
        tr.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        self.paused = rh._paused
        tr.set_protocol(self)
        self.transport = self.raw = tr
        self.open = self.handed_over = True
        # aiohttp forgets the connection: its handler ends without writing or
        # closing anything, and its server no longer counts it.
        rh.transport = None
        rh.connection_lost(None)
        if not tr.is_reading():
            tr.resume_reading()
        # The session keeps the environ (python-socketio passes it to namespace
        # connect handlers); the request in it is done with.
        environ.pop("aiohttp.request", None)
        environ.pop("wsgi.input", None)
        self.environ = environ
        # The request's connection slot lives as long as the connection, not the request.
        self.slot = keep_slot(request)
        asyncio.get_running_loop().create_task(self._run_handler())
        if tail:
            self.data_received(tail)
        return _HandedOver(status=101)

    async def _run_handler(self):
        try:
            await self.handler(self)
        except Exception:  # pragma: no cover - a bug must not leave the connection open
            log.exception("websocket handler failed")
            s = self.eio_socket
            if s is not None and not s.upgraded:
                s.ws_claimed = False  # another websocket may try again
            self._close(1011)

    # -- the interface of python-engineio's drivers (before attach) ----------------------

    async def wait(self):
        while not self.inbox:
            fut = self.waiter = asyncio.get_running_loop().create_future()
            try:
                await fut
            finally:
                self.waiter = None
        data = self._take()
        self._resume_reading()
        if data is None:
            raise OSError("websocket closed")
        return data

    async def send(self, message):
        if self.open:  # closing or gone: the reader learns it (wait raises OSError)
            self._write(ws_frame(message))

    async def close(self):
        self._close(1000)

    def attach(self, eio_socket) -> None:
        """From now on, messages go to `eio_socket` and its queue is written here."""
        self.eio_socket = eio_socket
        self.attached = True
        if not self.lost:
            eio_socket.hub_ws = self
            eio_socket.queue.on_put = self._schedule_flush
            if not eio_socket.queue.empty():
                self._schedule_flush()
        if self.inbox and not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain())

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        tr = self.transport
        manager = self.manager
        if manager is not None:
            held = manager._pending.pop(tr, None)  # gathered before: goes first
            if held is not None:
                data = (held if type(held) is bytes else b"".join(held)) + data
        if not tr.is_closing():
            tr.write(data)

    def _schedule_flush(self) -> None:
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        s = self.eio_socket
        if self.paused and not s.closed:
            return  # resume_writing flushes
        frames, end = [], False
        for pkt in s.queue.take_all():
            if pkt is None:
                end = True
                break
            frames.append(ws_frame(bytes(pkt.data) if pkt.binary else pkt.encode()))
        if frames and self.open:
            self._write(b"".join(frames))
        if end:
            self._close(1000)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.attached and not self.eio_socket.queue.empty():
            self._schedule_flush()

    def _close(self, code: int) -> None:
        """Start the closing handshake: our close frame, then the peer's answer (or
        `close_timeout`) ends the TCP connection."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self._write(bytes((0x88, 2)) + code.to_bytes(2, "big"))
        self.open = False
        if not self.lost:
            self.close_timer = asyncio.get_running_loop().call_later(self.close_timeout, self.transport.abort)

    # -- reading ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.buf:
            # A frame arriving in pieces grows one buffer: concatenating a new bytes
            # object per piece would be quadratic in the frame's size.
            self.buf += data
            data, self.buf = self.buf, b""
        pos, n = 0, len(data)
        limit = self.server.max_http_buffer_size
        while n - pos >= 2:
            b0, b1 = data[pos], data[pos + 1]
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if n - start < 2:
                    break
                length, start = int.from_bytes(data[start:start + 2], "big"), start + 2
            elif length == 127:
                if n - start < 8:
                    break
                length, start = int.from_bytes(data[start:start + 8], "big"), start + 8
            if b0 & 0x70 or not b1 & 0x80:
                return self._fail(1002)  # reserved bits, or a client frame not masked
            if length > limit:
                return self._fail(1009)
            end = start + 4 + length
            if n < end:
                break
            payload = bytearray(data[start + 4:end])
            if length:
                websocket_mask(bytes(data[start:start + 4]), payload)
            pos = end
            if not self._frame(b0 & 0x80, b0 & 0x0F, payload, limit):
                return
        if pos < n:
            self.buf = bytearray(data[pos:])

    def _frame(self, fin, opcode, payload: bytearray, limit: int) -> bool:
        """Handle one frame; False when the connection is done reading."""
        if opcode >= 8:
            if not fin or len(payload) > 125:
                return self._fail(1002)
            if opcode == 8:  # close
                if not self.closing:
                    self._close(1000)
                self.transport.close()
                self._deliver_end()
                return False
            if opcode == 9:  # ping
                if self.open:
                    self._write(bytes((0x8A, len(payload))) + bytes(payload))
                return True
            return opcode == 10 or self._fail(1002)  # pong: nothing to do
        if opcode == 0:
            if self.frag is None:
                return self._fail(1002)
            self.frag += payload  # one growing buffer: thousands of tiny fragments stay linear
            if len(self.frag) > limit:
                return self._fail(1009)
            if not fin:
                return True
            payload, opcode, self.frag = self.frag, self.frag_op, None
        elif opcode in (1, 2):
            if self.frag is not None:
                return self._fail(1002)
            if not fin:
                self.frag, self.frag_op = payload, opcode
                return True
        else:
            return self._fail(1002)
        if self.closing:
            return True  # closing: what the peer still sends is not handled
        if opcode == 1:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                return self._fail(1007)
        else:
            message = bytes(payload)
        self._deliver(message)
        return True

    def _fail(self, code: int) -> bool:
        """A protocol error: close with `code`; for the session, the transport closed
        (as with aiohttp's driver)."""
        if code == 1009:
            log_oversized(getattr(self.eio_socket, "sid", "?"), self.server.max_http_buffer_size)
        self._close(code)
        self.transport.close()
        self._deliver_end()
        return False

    def _deliver(self, message) -> None:
        self.inbox.append(message)
        if message is not None:
            self.inbox_bytes += len(message)
        if self.attached:
            if not self.draining:
                self.draining = True
                asyncio.get_running_loop().create_task(self._drain())
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        if (len(self.inbox) >= self.inbox_limit
                or self.inbox_bytes >= self.inbox_packets * self.server.max_http_buffer_size) \
                and not self.reading_paused and not self.lost:
            self.reading_paused = True
            self.transport.pause_reading()

    def _take(self):
        data = self.inbox.pop(0)
        if data is not None:
            self.inbox_bytes -= len(data)
        return data

    def _deliver_end(self) -> None:
        """The connection is over: the session learns it after what came before."""
        if self.lost:
            return
        self.lost = True
        self.open = False
        self._deliver(None)

    async def _drain(self) -> None:
        s, inbox = self.eio_socket, self.inbox
        try:
            while inbox:
                data = self._take()
                if data is None:
                    reason = s.server.reason.TRANSPORT_CLOSE
                elif s.closed:
                    continue  # a closed session reads nothing more
                else:
                    reason = await s._ws_message(data)
                if reason:
                    inbox.clear()
                    self.inbox_bytes = 0
                    await s._ws_end(reason)
                    return
        finally:
            self.draining = False
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and len(self.inbox) < self.inbox_limit // 2 and not self.lost \
                and self.inbox_bytes < self.server.max_http_buffer_size:
            self.reading_paused = False
            self.transport.resume_reading()

    def eof_received(self):
        return False  # the transport closes; connection_lost follows

    def connection_lost(self, exc) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        self.closing = True
        s = self.eio_socket
        if s is not None and getattr(s, "hub_ws", None) is self:
            s.hub_ws = None
            s.queue.on_put = None
        if not self.lost:
            self._deliver_end()


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


def check_handover() -> list[str]:
    """What LeanWebSocket needs of aiohttp's RequestHandler and is missing."""
    from aiohttp.web_protocol import RequestHandler

    missing = []
    names = set(RequestHandler.__init__.__code__.co_names) | set(getattr(RequestHandler, "__slots__", ()))
    from aiohttp.base_protocol import BaseProtocol
    names |= set(BaseProtocol.__slots__)
    for name in ("_message_tail", "_paused", "transport", "_manager"):
        if name not in names:
            missing.append(f"aiohttp RequestHandler.{name}")
    if not hasattr(RequestHandler, "connection_lost"):
        missing.append("aiohttp RequestHandler.connection_lost")
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
            if not check_handover():
                driver = type("LeanWebSocket", (LeanWebSocket,),
                              {"__slots__": (), "compress": self.websocket_compression, "manager": self,
                               "fallback_class": driver})
            else:  # pragma: no cover - aiohttp changed
                log.warning("lean websockets off: aiohttp internals changed: %s", ", ".join(check_handover()))
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

    def backlogged(self, eio_sid: str) -> bool:
        """Whether the client has not taken what was sent to it yet: packets wait in
        its queue (a long-poll not fetched, a websocket writer waiting for the drain)
        or its websocket's transport is paused (it reads slower than we write).
        hub/coalesce.py holds superseded updates back from such sockets."""
        s = self.server.eio.sockets.get(eio_sid)
        if s is None or s.closed:
            return False
        if not s.queue.empty():
            return True
        ws = getattr(s, "hub_ws", None)
        return ws is not None and (ws.sending > 0 or bool(ws.paused))

    @staticmethod
    async def _send_slow(s, pkts) -> None:
        for p in pkts:
            await s.send(p)


def backlogged(server, eio_sid: str) -> bool:
    """Whether a socket is behind: packets wait in its Engine.IO queue (a long-poll
    not yet taken, a writer waiting for a drain) or its websocket transport is paused
    (the client reads slower than we write). For hub/deltas.py, which coalesces what
    such a socket would otherwise queue."""
    s = server.eio.sockets.get(eio_sid)
    if s is None:
        return False
    if not s.queue.empty():
        return True
    ws = getattr(s, "hub_ws", None)
    return bool(ws is not None and ws.paused)


ADMIN_NAMESPACE = "/admin"
ANNOUNCE = "hub:announce"  # a shared /admin message asking the instances to list their sockets
# Credentials never shown to the Admin UI: the request headers and query parameters
# that may carry a token, and the payload of the token events (auth:refresh).
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
SECRET_QUERY = frozenset({"token", "access_token", "auth"})
HIDDEN = "[hidden]"


def redacted(event: str, data):
    """An /admin event's data without credentials (instrument() reports the
    handshake's headers and query of each socket, and every event's payload)."""
    if event in ("socket_connected", "all_sockets"):
        sockets = data if event == "all_sockets" else [data[0]]
        for socket in sockets:
            handshake = socket.get("handshake", {})
            for part, secret in (("headers", SECRET_HEADERS), ("query", SECRET_QUERY)):
                values = handshake.get(part, {})
                for name in values:
                    if name.lower() in secret:
                        values[name] = HIDDEN
    elif event in ("event_received", "event_sent") and str(data[2][0]).startswith("auth:"):
        data = (*data[:2], [data[2][0], HIDDEN], *data[3:])
    return data


class AdminUIManager(HubManager):
    """The manager of hub.sio when the Socket.IO Admin UI is on (hub/adapters/admin_ui.py):
    broadcasts to the whole `/admin` namespace also go to the other instances
    (`share`, Fanout.share), and `emit_here` delivers theirs. Other namespaces'
    emits are HubManager's."""

    share = None
    instrumented = None  # what hub.sio.instrument() returned (serializes sockets)

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        if namespace == ADMIN_NAMESPACE:
            data = redacted(event, data)
        if namespace == ADMIN_NAMESPACE and event == "all_sockets":
            # Sent when an admin connects. python-socketio 5.18.1's instrument()
            # addresses it to the last socket it listed (its loop reuses the name
            # `sid`), never an /admin one: this instance's admins get it instead.
            await super().emit(event, data, namespace, room=[None], **kwargs)
            # It lists this instance's sockets, and the UI replaces its list with
            # it: the other instances announce theirs after it.
            if self.share is not None:
                await self.share(ADMIN_NAMESPACE, ANNOUNCE, [])
            return
        if namespace == ADMIN_NAMESPACE and to is None and room is None and self.share is not None:
            await self.share(ADMIN_NAMESPACE, event, list(data) if isinstance(data, tuple) else [data])
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                                  to=to, **kwargs)

    async def emit_here(self, event: str, args: list) -> None:
        if event == ANNOUNCE:
            return await self.announce()
        await super().emit(event, tuple(args), ADMIN_NAMESPACE)

    async def announce(self) -> None:
        """Every socket of this instance, to the admins of every instance."""
        now = datetime.now(timezone.utc).isoformat()
        for namespace in list(self.get_namespaces()):
            for sid, eio_sid in list(self.get_participants(namespace, None)):
                try:
                    socket = self.instrumented.serialize_socket(sid, namespace, eio_sid)
                except KeyError:  # gone meanwhile
                    continue
                await self.emit("socket_connected", (socket, now), ADMIN_NAMESPACE)

    async def disconnect(self, sid, namespace, **kwargs):
        # instrument() records a socket in `_timestamps` and reports it connected
        # before its connect handler runs, and forgets and reports it on its
        # disconnect event, which runs before this. Still there: a connection its
        # namespace refused, which has no disconnect event.
        await super().disconnect(sid, namespace, **kwargs)
        if getattr(self, "_timestamps", {}).pop(sid, None) is not None:
            await self.emit("socket_disconnected", (namespace, sid, "connection refused",
                                                   datetime.now(timezone.utc).isoformat()), ADMIN_NAMESPACE)
