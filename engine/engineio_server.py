"""python-engineio's asyncio server (engineio.AsyncServer) with the fixes of issue 6
(docs/protocol.md): its sessions are `engine.socket.ProtocolSocket`s, their send
queues `PacketQueue`s, their pings one `Heartbeat`, and its background tasks are
owned (`tasks`, cancelled on shutdown). The private names of python-engineio it
overrides or reads are listed in engine/internals.py."""
from __future__ import annotations

import asyncio
import json
import urllib.parse

import engineio
from aiohttp import web
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from engine.heartbeat import Heartbeat
from engine.queue import PacketQueue
from engine.socket import ProtocolSocket
from engine.tasks import Tasks, cancel_and_wait


class ProtocolEngineIOServer(engineio.AsyncServer):
    """python-engineio's asyncio server with the fixes of issue 6 (see module)."""

    socket_class = ProtocolSocket

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat = Heartbeat()
        self.tasks = Tasks()  # the tasks of its sessions and websockets

    def create_queue(self, *args, **kwargs):
        """The sessions' send queues (see PacketQueue)."""
        return PacketQueue()

    async def shutdown(self):
        self.heartbeat.stop()
        await super().shutdown()
        await self.tasks.close()

    def attach(self, app, engineio_path="engine.io"):
        """Item 2: the endpoint takes every method, so that an unsupported one is
        answered 400 by the protocol (like Node), not 405 by the router."""
        if self.async_mode != "aiohttp":  # pragma: no cover - the hub runs on aiohttp
            return super().attach(app, engineio_path)
        app.router.add_route("*", f"/{engineio_path.strip('/')}/", self.handle_request)
        app.on_cleanup.append(self._close_tasks)

    async def _close_tasks(self, app) -> None:
        """The app is done: no task of a session, nor the server's service task
        (which `shutdown` alone stops), outlives it."""
        self.heartbeat.stop()
        await cancel_and_wait(self.service_task_handle)
        self.service_task_event = self.service_task_handle = None
        await self.tasks.close()

    async def handle_request(self, *args, **kwargs):
        """Item 4: a websocket for a session that already has one is accepted and
        closed at once, like Node (python-engineio answered 400 here when the
        session was upgraded, and held the websocket open forever when not yet).

        Issue 18, item 6: a long-polling POST over `max_http_buffer_size` is
        answered 413 with `too_large_body` (the contract's `payload_too_large` error), unread, and the
        session is kept (Node answers 413 too); python-engineio closed the session."""
        request = args[0] if args and isinstance(args[0], web.BaseRequest) else None
        if request is not None and request.method == "GET" and \
                request.headers.get("Upgrade", "").lower() == "websocket":
            s = self.sockets.get(request.query.get("sid", ""))
            if s is not None and (s.upgraded or getattr(s, "ws_claimed", False)):
                return await self.close_websocket_at_once({"aiohttp.request": request})
        if request is not None and request.method == "POST" and \
                (request.content_length or 0) > self.max_http_buffer_size:
            return await self._too_large(request)
        return await super().handle_request(*args, **kwargs)

    async def _too_large(self, request):
        environ = self._async["translate_request"](request)
        response = await self._make_response({
            "status": "413 PAYLOAD TOO LARGE", "headers": [("Content-Type", "application/json")],
            "response": self.too_large_body()}, environ)
        response.force_close()  # the body is left unread
        return response

    def too_large_body(self) -> bytes:
        """The body of the 413 answer to a POST over `max_http_buffer_size`. The hub
        overrides it with its contract error (it is the same JSON)."""
        return json.dumps({"error": {"code": "payload_too_large",
                                     "message": f"a request larger than {self.max_http_buffer_size} bytes"}}).encode()

    async def close_websocket_at_once(self, environ):
        ws = web.WebSocketResponse()
        await ws.prepare(environ["aiohttp.request"])
        # The same short pause as for a refused poll (ProtocolSocket.refuse_delay):
        # what the session's own websocket sent just before reaches the client first.
        await asyncio.sleep(self.socket_class.refuse_delay)
        await ws.close()
        return ws

    def _method_not_found(self):
        """Item 2: an unsupported method is a bad request (400), as in Node."""
        return self._bad_request("Method not allowed")

    def _ok(self, packets=None, headers=None, jsonp_index=None):
        """Item 5: a long-polling response encodes binary packets from their data
        (base64), never from a cached encoding: the packet object may be shared
        with a websocket recipient whose raw-bytes encoding is cached on it, which
        made the payload encoder fail and the polling client be disconnected."""
        if packets is None:  # the answer to a POST: Node's body is "ok"
            return {"status": "200 OK", "headers": [("Content-Type", "text/plain")], "response": b"ok"}
        packets = [eio_packet.Packet(p.packet_type, p.data) if p.binary else p for p in packets]
        return super()._ok(packets, headers=headers, jsonp_index=jsonp_index)

    def handshake_data(self, sid, transport) -> dict:
        """Item 1: the OPEN packet announces the intervals in exact milliseconds.
        python-engineio announced `int(interval + grace) * 1000`: 0 for any
        interval under a second, 2000 for 2.5 s."""
        return {
            "sid": sid,
            "upgrades": self._upgrades(sid, transport),
            "pingTimeout": round(self.ping_timeout * 1000),
            "pingInterval": round((self.ping_interval + self.ping_interval_grace_period) * 1000),
            "maxPayload": self.max_http_buffer_size,
        }

    async def _handle_connect(self, environ, transport, jsonp_index=None):
        """A handshake (python-engineio's, with items 1 and 2):

        * item 2: a handshake without a `transport` query parameter is refused
          (400); python-engineio took it as polling;
        * item 1: see `handshake_data`;
        * the session is a `socket_class`."""
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        if "transport" not in query:
            return self._bad_request("Missing transport")
        if self.start_service_task:
            self.start_service_task = False
            self.service_task_handle = self.start_background_task(self._service_task)

        sid = self.generate_id()
        s = self.socket_class(self, sid)
        self.sockets[sid] = s
        await s.send(eio_packet.Packet(eio_packet.OPEN, self.handshake_data(sid, transport)))

        ret = await self._trigger_event("connect", sid, environ, run_async=False)
        if ret is not None and ret is not True:
            del self.sockets[sid]
            self.logger.warning("Application rejected connection")
            return self._unauthorized(ret or None)

        s.schedule_ping()
        if transport == "websocket":
            ret = await s.handle_get_request(environ)
            if s.closed and sid in self.sockets:
                del self.sockets[sid]
            return ret
        s.connected = True
        headers = None
        if self.cookie:
            attributes = self.cookie if isinstance(self.cookie, dict) else {
                "name": self.cookie, "path": "/", "SameSite": "Lax"}
            headers = [("Set-Cookie", self._generate_sid_cookie(sid, attributes))]
        try:
            return self._ok(await s.poll(), headers=headers, jsonp_index=jsonp_index)
        except eio_exceptions.QueueEmpty:
            return self._bad_request()

