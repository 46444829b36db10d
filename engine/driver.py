"""python-engineio's aiohttp websocket driver with compression chosen by the
application and the connection known to the broadcast manager (engine/manager.py),
which writes ready frames to it. The private names of aiohttp and python-engineio
it reaches are listed in engine/internals.py."""
from __future__ import annotations

from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp


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
        # internals ever change: engine/internals.py has then turned the fast path off).
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
