"""The Engine.IO server's websocket driver (its `_async["websocket"]` entry, set by
engine.manager.HubManager): `LeanWebSocket` takes the connection over from aiohttp
after the handshake; engine.driver.HubWebSocket serves what it cannot take. The
private names of aiohttp it reaches are listed in engine/internals.py."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from engine.errors import log_oversized
from engine.frames import websocket_mask, ws_accept, ws_frame

log = logging.getLogger("hub.manager")


class Releasable(Protocol):
    """What a handover hook returns: released once, when the connection ends."""

    def release(self) -> None: ...


#: Called with the request of a websocket the engine takes over from aiohttp; what it
#: returns is released when the connection ends (the hub: its per-address slot).
HandoverHook = Callable[[web.BaseRequest], "Releasable | None"]


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

    Reached into (engine/internals.py): aiohttp's RequestHandler `_message_tail`,
    `_paused`, `_manager`, `transport` and `connection_lost`."""

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
        self.slot = None  # what the manager's on_handover hook returned, released when the connection ends
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
        # What the application holds for the request (the hub: its per-address
        # connection slot) lives as long as the connection, not the request.
        hook = getattr(self.manager, "on_handover", None)
        self.slot = hook(request) if hook is not None else None
        self.server.tasks.spawn(self._run_handler())
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
            self.server.tasks.spawn(self._drain())

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
                self.server.tasks.spawn(self._drain())
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

