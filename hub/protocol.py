"""python-socketio / python-engineio, keeping the Socket.IO v5 and Engine.IO v4
protocols the way Node's reference server does (issue 6, docs/protocol.md).

Subclasses over the libraries' own extension points, nothing patched:

* `ProtocolSocket` (engineio.async_socket.AsyncSocket): one client session.
* `ProtocolEngineIOServer` (engineio.AsyncServer): creates `ProtocolSocket`s.
* `ProtocolServer` (socketio.AsyncServer): picks `ProtocolEngineIOServer` through
  `_engineio_server_class()`; `hub.transport.HubServer` derives from it.
* `NotepackPacket` (socketio.msgpack_packet.MsgPackPacket): msgpack as
  socket.io-msgpack-parser writes it, for the hub's msgpack endpoint.

Each fix is a small override whose docstring names the item of issue 6 it fixes,
written so it could be offered upstream as it is; the limits of issue 18 (items 1
and 6) are overrides of the same methods. The internals reached are those of
python-socketio 5.18.1 / python-engineio 4.15.1, pinned in pyproject.toml:

* python-engineio: AsyncSocket (`handle_get_request`, `handle_post_request`,
  `receive`, `close`, `_upgrade_websocket`, `_websocket_handler`, `queue`,
  `last_ping`, `upgrading`, `upgraded`), AsyncServer (`_handle_connect`,
  `_trigger_event`, `_get_socket`, `_ok`, `_bad_request`, `_unauthorized`,
  `_make_response`, `_async`, `_upgrades`, `sockets`), the aiohttp driver's
  `translate_request` and its `wsgi.input` (aiohttp's request stream);
* python-socketio: AsyncServer (`_handle_connect`, `_handle_eio_connect`,
  `_handle_eio_message`, `_handle_eio_disconnect`, `_handle_event`,
  `_handle_ack`, `_handle_disconnect`, `_trigger_event`, `_send_packet`,
  `_binary_packet`, `environ`), Packet (`attachment_count`, `add_attachment`).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
import urllib.parse

import engineio
import socketio
from aiohttp import web
from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio import payload as eio_payload
from socketio import exceptions as sio_exceptions
from socketio import msgpack_packet
from socketio import packet as sio_packet

from handlers.errors import PayloadTooLarge

log = logging.getLogger("hub.protocol")


class MalformedPayload(eio_exceptions.EngineIOError):
    """A long-polling POST whose body is not an Engine.IO payload."""


class DuplicatePoll(eio_exceptions.EngineIOError):
    """A second long-polling GET while one is still waiting."""


class DuplicatePost(eio_exceptions.EngineIOError):
    """A long-polling POST while another one's body is still being read."""


class BodyLost(eio_exceptions.EngineIOError):
    """A long-polling POST whose body stopped before its Content-Length (the client
    went away, or the body timeout of hub.http.guard closed the connection)."""


def log_oversized(sid: str, limit: int) -> None:
    """The one line a connection closed for a message over the packet limit leaves."""
    log.warning("%s: a websocket message over %d bytes, closing the connection", sid, limit)


class PacketTooLarge(ValueError):
    """A Socket.IO packet over the server's limits (its attachments, or its bytes)."""


async def read_body(stream, length: int | None, limit: int) -> bytes:
    """The whole body of a request: `length` bytes (Content-Length), or, without
    one (chunked), everything up to `limit`. `stream.read(n)` (what python-engineio
    used) returns what has arrived so far, so a body in several TCP segments was
    read short (issue 18, item 6)."""
    if length is not None:
        try:
            return await stream.readexactly(length)
        except asyncio.IncompleteReadError:
            raise BodyLost() from None
    chunks, size = [], 0
    while not stream.at_eof():
        chunk = await stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise eio_exceptions.ContentTooLongError()
    return b"".join(chunks)


class PacketQueue:
    """The send queue of a session: what python-engineio uses of asyncio.Queue
    (put/get/task_done/join/empty), for one consumer at a time, at a fraction of the
    memory: asyncio.Queue holds four deques (~3 KiB per idle connection); this holds
    a list, and futures only while someone waits.

    `on_put`, when set, is called after each put: a websocket that writes without a
    task (hub.manager.LeanWebSocket) is told that there is something to write."""

    __slots__ = ("_items", "_getters", "_unfinished", "_joiners", "on_put")

    def __init__(self) -> None:
        self._items: list = []
        self._getters: list | None = None
        self._joiners: list | None = None
        self._unfinished = 0
        self.on_put = None

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item) -> None:
        self._items.append(item)
        self._unfinished += 1
        getters = self._getters
        if getters:
            self._getters = None
            for fut in getters:
                if not fut.done():
                    fut.set_result(None)
        if self.on_put is not None:
            self.on_put()

    async def put(self, item) -> None:
        self.put_nowait(item)

    def get_nowait(self):
        if not self._items:
            raise asyncio.QueueEmpty()
        return self._items.pop(0)

    async def get(self):
        while not self._items:
            fut = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(fut)
            try:
                await fut
            finally:
                if self._getters and fut in self._getters:
                    self._getters.remove(fut)
        return self._items.pop(0)

    def take_all(self) -> list:
        """Everything queued, at once (counted as done)."""
        items, self._items = self._items, []
        self._unfinished -= len(items)
        if self._unfinished <= 0:
            self._unfinished = 0
            self._release_joiners()
        return items

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0:
            self._release_joiners()

    def _release_joiners(self) -> None:
        joiners, self._joiners = self._joiners, None
        for fut in joiners or ():
            if not fut.done():
                fut.set_result(None)

    async def join(self) -> None:
        if self._unfinished:
            fut = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(fut)
            await fut


class Heartbeat:
    """The pings and pong deadlines of all sessions of a server on one loop timer:
    a heap of (when, seq, socket, stamp) entries, the timer armed for the earliest.
    A task and a timer per session (python-engineio, and this module before) cost
    ~1 KiB per idle connection. An entry that no longer applies (the session
    answered, or closed) is dropped when it comes due."""

    def __init__(self) -> None:
        self._heap: list = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = float("inf")

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float, socket, stamp) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), socket, stamp))
        if when < self._armed:
            self._arm(when)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = asyncio.get_running_loop().call_at(when, self._run)

    def _run(self) -> None:
        self._timer, self._armed = None, float("inf")
        heap = self._heap
        # Timers may fire up to a clock tick early; what is due within 1 ms runs now.
        now = asyncio.get_running_loop().time() + 0.001
        while heap and heap[0][0] <= now:
            _, _, socket, stamp = heapq.heappop(heap)
            try:
                socket._heartbeat(stamp)
            except Exception:  # pragma: no cover - one session must not stop the others
                socket.server.logger.exception("heartbeat of %s failed", socket.sid)
        if heap:
            self._arm(heap[0][0])

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed, self._heap = None, float("inf"), []


def _wants_upgrade(environ: dict) -> bool:
    connections = [s.strip() for s in environ.get("HTTP_CONNECTION", "").lower().split(",")]
    return "upgrade" in connections and environ.get("HTTP_UPGRADE", "").lower() == "websocket"


class ProtocolSocket(async_socket.AsyncSocket):
    """An Engine.IO session that keeps the v4 protocol like Node's engine.io."""

    #: Seconds a websocket may take to send `2probe` and then `5` (Node: upgradeTimeout).
    upgrade_timeout = 10.0

    #: Seconds a poll that arrives during an upgrade waits for it to settle (Node: 100 ms).
    upgrade_check = 0.1

    def __init__(self, server, sid):
        super().__init__(server, sid)
        self._upgrade_settled: asyncio.Event | None = None
        self.pong_deadline: float | None = None
        self.ping_start = 0.0
        self.polling = False  # a long-polling GET is waiting for packets
        self.posting = False  # a long-polling POST's body is being read
        self.ws_claimed = False  # a websocket is attached to this session, or attaching

    # -- long-polling ---------------------------------------------------------------

    async def handle_get_request(self, environ):
        """Item 2: a second GET while a poll is waiting closes the session, like
        Node: the waiting poll is answered with a CLOSE packet, this one with 400."""
        if _wants_upgrade(environ):
            return await super().handle_get_request(environ)
        if await self._timed_out():
            raise eio_exceptions.QueueEmpty()
        if self.polling:
            await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise DuplicatePoll()
        if self.upgrading and self._upgrade_settled is not None:
            # Item 3: Node answers a poll during an upgrade with NOOP from a check
            # that runs every 100 ms; if the upgrade completes meanwhile, the poll
            # is refused like every HTTP request after it.
            try:
                await asyncio.wait_for(self._upgrade_settled.wait(), self.upgrade_check)
            except asyncio.TimeoutError:
                pass
            if self.upgraded:
                return await self._refuse_after_upgrade()
        self.polling = True
        try:
            packets = await super().handle_get_request(environ)
        finally:
            self.polling = False
        if self.upgraded and isinstance(packets, list) and \
                all(p.packet_type == eio_packet.NOOP for p in packets):
            return await self._refuse_after_upgrade()
        return packets

    #: Pause before refusing a poll that raced an upgrade's completion.
    refuse_delay = 0.02

    async def _refuse_after_upgrade(self):
        """A poll that raced the upgrade is refused like any HTTP request after it
        (400), after a short pause: the websocket's frames sent just before (the
        probe's answer) then reach the client first, as they do with Node, where
        such a poll arrives later."""
        await asyncio.sleep(self.refuse_delay)
        return self.server._bad_request("Unexpected HTTP request")

    async def receive(self, pkt):
        """A packet type outside the protocol is a parse error and closes the
        session, like Node (python-engineio failed on it with an IndexError)."""
        if not isinstance(pkt.packet_type, int) or not 0 <= pkt.packet_type < len(eio_packet.packet_names):
            raise eio_exceptions.UnknownPacketError()
        if pkt.packet_type in (eio_packet.OPEN, eio_packet.PING, eio_packet.NOOP):
            return  # only a server sends these; ignored as python-engineio did on websockets
        await super().receive(pkt)

    async def handle_post_request(self, environ):
        """Item 2: a POST body that is not a valid payload (or holds a packet a
        client may not send) closes the session and is answered 400, like Node.
        python-engineio answered 200 and kept the session.

        Issue 18: the body is read whole, however many TCP segments it comes in
        (`read_body`); one over the limit is answered before this
        (ProtocolEngineIOServer). A POST that arrives while another one's body is
        still being read closes the session and is answered 400, like Node ("data
        request overlap"): a session buffers at most one body."""
        raw = environ.get("CONTENT_LENGTH")
        try:
            length = int(raw) if raw not in (None, "") else None
        except ValueError:
            raise MalformedPayload() from None
        if length is not None and (length < 0 or length > self.server.max_http_buffer_size):
            raise eio_exceptions.ContentTooLongError()
        if self.posting:
            await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise DuplicatePost()
        self.posting = True
        try:
            body = await read_body(environ["wsgi.input"], length, self.server.max_http_buffer_size)
        except ConnectionError:
            raise BodyLost() from None
        finally:
            self.posting = False
        if await self._timed_out():
            raise eio_exceptions.SocketIsClosedError()
        try:
            packets = eio_payload.Payload(encoded_payload=body.decode("utf-8")).packets
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError):
            await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)
            raise MalformedPayload()
        for pkt in packets:
            try:
                await self.receive(pkt)
            except eio_exceptions.UnknownPacketError:
                await self.close(wait=False, abort=False, reason=self.server.reason.TRANSPORT_ERROR)
                raise MalformedPayload()

    # -- heartbeat ------------------------------------------------------------------

    def schedule_ping(self):
        """Item 3: the ping cycle runs on absolute deadlines from its start, and
        every request checks the pong deadline itself (see `_timed_out`), so a
        missing PONG is noticed at `pingInterval + pingTimeout`, like Node.
        python-engineio noticed it when its monitor task came round to the socket,
        up to a whole timeout late.

        The PING and the pong deadline are entries of the server's `Heartbeat`
        (one loop timer for all sessions), not a task per session."""
        if self.last_ping:
            self.last_ping = None
            start = asyncio.get_running_loop().time()
            self.pong_deadline = start + self.server.ping_interval + self.server.ping_timeout
            self.ping_start = start
            self.server.heartbeat.add(start + self.server.ping_interval, self, None)

    def _heartbeat(self, stamp) -> None:
        """Due: send the PING (stamp None), or check that its PONG came (the stamp
        of the PING it waits for)."""
        if self.closing or self.closed:
            return
        if stamp is None:
            stamp = self.last_ping = time.time()
            self.queue.put_nowait(eio_packet.Packet(eio_packet.PING))
            self.server.heartbeat.add(self.ping_start + self.server.ping_interval + self.server.ping_timeout,
                                      self, stamp)
        elif self.last_ping == stamp:
            self.server.logger.info("%s: no PONG within pingTimeout, closing", self.sid)
            asyncio.ensure_future(self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT))

    async def _timed_out(self) -> bool:
        """True (and the session closed) when a request comes after the pong deadline."""
        if self.last_ping and self.pong_deadline is not None and \
                asyncio.get_running_loop().time() >= self.pong_deadline:
            await self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT)
            return True
        return False

    # -- closing --------------------------------------------------------------------

    #: Upper bound for close(wait=True) waiting for the CLOSE packet to be taken.
    close_wait = 5.0

    async def close(self, wait=True, abort=False, reason=None):
        """Item 3: closing answers what is waiting, like Node.

        * A client's CLOSE packet (abort) answers a waiting poll with NOOP;
          a server-side close queues a CLOSE packet (the waiting poll gets it).
        * The queue is then ended, so a waiting poll or the websocket writer
          returns at once and the websocket is closed, instead of idling until
          the next ping cycle.
        * close(wait=True) waits for the CLOSE packet to be taken at most
          `close_wait` seconds: a long-polling client that is gone never polls it.
        """
        if self.closed or self.closing:
            return
        self.closing = True
        await self.server._trigger_event("disconnect", self.sid,
                                         reason or self.server.reason.SERVER_DISCONNECT, run_async=False)
        if not abort:
            self.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
        elif self.polling:
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
        self.closed = True
        if wait:
            try:
                await asyncio.wait_for(self.queue.join(), self.close_wait)
            except asyncio.TimeoutError:
                pass
        self.queue.put_nowait(None)

    # -- websocket ------------------------------------------------------------------

    async def _upgrade_websocket(self, environ):
        """Item 4: one websocket per session. A websocket opened with the sid of a
        session that is upgraded, or has a websocket attaching, is closed at once
        (as Node does). python-engineio held it open forever, without pings."""
        if self.upgraded or self.ws_claimed:
            return await self.server.close_websocket_at_once(environ)
        if self.server._async["websocket"] is None:
            return self.server._bad_request()
        self.ws_claimed = True
        ws = self.server._async["websocket"](self._websocket_handler, self.server)
        try:
            return await ws(environ)
        finally:
            # A driver that took the connection over (hub.manager.LeanWebSocket)
            # runs the handler in its own task, which releases the claim itself.
            if not self.upgraded and not getattr(ws, "handed_over", False):
                self.ws_claimed = False

    async def _ws_receive(self, ws, timeout):
        data = await asyncio.wait_for(ws.wait(), timeout)
        if data and len(data) > self.server.max_http_buffer_size:
            raise ValueError("packet is too large")
        return eio_packet.Packet(encoded_packet=data)

    async def _ws_message(self, data) -> str | None:
        """Handle one message of the websocket; the reason to end the session, if any."""
        if data and len(data) > self.server.max_http_buffer_size:
            log_oversized(self.sid, self.server.max_http_buffer_size)
            return self.server.reason.TRANSPORT_ERROR
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except Exception:  # undecodable packet
            return self.server.reason.TRANSPORT_ERROR
        try:
            await self.receive(pkt)
        except eio_exceptions.UnknownPacketError:
            return self.server.reason.TRANSPORT_ERROR
        except eio_exceptions.SocketIsClosedError:
            return self.server.reason.TRANSPORT_CLOSE
        except Exception:  # pragma: no cover - a handler bug must not end the session
            self.server.logger.exception("Unknown receive error")
        return None

    async def _ws_end(self, reason: str) -> None:
        """The websocket of this session is gone (or failed): close the session and
        forget it, as python-engineio does when its websocket request returns."""
        await self.close(wait=False, abort=True, reason=reason)
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]

    async def _upgrade(self, ws) -> bool:
        """Items 3 and 4: the probe exchange of an upgrade from long-polling.

        Each step waits at most `upgrade_timeout` (python-engineio waited forever).
        Only a poll that is actually waiting is ended with NOOP; python-engineio
        queued the NOOP anyway, and when no poll was waiting it was sent on the new
        websocket after the upgrade."""
        try:
            pkt = await self._ws_receive(ws, self.upgrade_timeout)
        except (OSError, ValueError, asyncio.TimeoutError):
            return False
        if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
            return False
        await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
        self.upgrading = True  # from here on, polls are answered NOOP
        self._upgrade_settled = asyncio.Event()
        check = asyncio.ensure_future(self._end_poll_during_upgrade())
        try:
            pkt = await self._ws_receive(ws, self.upgrade_timeout)
            self.upgraded = pkt.packet_type == eio_packet.UPGRADE
        except (OSError, ValueError, asyncio.TimeoutError):
            pass
        finally:
            check.cancel()
            self.upgrading = False
            self._upgrade_settled.set()
        if self.upgraded and self.polling:
            # A poll still waiting must end before the websocket writer takes over
            # the queue; if it gets nothing but this NOOP, it is refused (400).
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
        return self.upgraded

    async def _end_poll_during_upgrade(self):
        """Node's upgrade check: a poll waiting `upgrade_check` after the probe is
        ended with NOOP, so that the client can pause polling and send UPGRADE."""
        await asyncio.sleep(self.upgrade_check)
        if self.upgrading and self.polling:
            self.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))

    async def _websocket_handler(self, ws):
        """The websocket transport (python-engineio's, with items 3, 4 and 5):

        * the upgrade steps are bounded in time (`_upgrade`);
        * binary packets are written from their data, never from the encode cache
          of a packet object another (long-polling) socket may share (item 5);
        * an undecodable packet closes the connection, like Node (python-engineio
          let the exception escape, leaving the session registered);
        * a closed session closes its websocket at once (see `close`);
        * no timer per read: a silent client is caught by the heartbeat's pong
          deadline, which closes the session and so the websocket.

        A driver with `attach` (hub.manager.LeanWebSocket) reads and writes
        without tasks once attached; any other runs a reader loop here and a
        writer task."""
        if self.connected:
            if not await self._upgrade(ws):
                self.server.logger.info("%s: websocket upgrade failed", self.sid)
                self.ws_claimed = False
                await ws.close()
                return
        else:
            self.connected = True
            self.upgraded = True
        attach = getattr(ws, "attach", None)
        if attach is not None:
            attach(self)
            return

        async def writer():
            queue = self.queue
            try:
                while True:
                    pkt = await queue.get()
                    queue.task_done()
                    for pkt in [pkt] + queue.take_all():
                        if pkt is None:
                            return
                        await ws.send(bytes(pkt.data) if pkt.binary else pkt.encode())
            except Exception:
                pass
            finally:
                await ws.close()

        writer_task = asyncio.ensure_future(writer())
        reason = None
        try:
            while not self.closed and reason is None:
                try:
                    data = await ws.wait()
                except (OSError, asyncio.CancelledError):
                    break
                except Exception:  # pragma: no cover - the driver failed
                    reason = self.server.reason.TRANSPORT_ERROR
                    break
                reason = await self._ws_message(data)
        finally:
            self.queue.put_nowait(None)  # unlock the writer
            await writer_task
            await self.close(wait=False, abort=True, reason=reason or self.server.reason.TRANSPORT_CLOSE)


class ProtocolEngineIOServer(engineio.AsyncServer):
    """python-engineio's asyncio server with the fixes of issue 6 (see module)."""

    socket_class = ProtocolSocket

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.heartbeat = Heartbeat()

    def create_queue(self, *args, **kwargs):
        """The sessions' send queues (see PacketQueue)."""
        return PacketQueue()

    async def shutdown(self):
        self.heartbeat.stop()
        await super().shutdown()

    def attach(self, app, engineio_path="engine.io"):
        """Item 2: the endpoint takes every method, so that an unsupported one is
        answered 400 by the protocol (like Node), not 405 by the router."""
        if self.async_mode != "aiohttp":  # pragma: no cover - the hub runs on aiohttp
            return super().attach(app, engineio_path)
        app.router.add_route("*", f"/{engineio_path.strip('/')}/", self.handle_request)

    async def handle_request(self, *args, **kwargs):
        """Item 4: a websocket for a session that already has one is accepted and
        closed at once, like Node (python-engineio answered 400 here when the
        session was upgraded, and held the websocket open forever when not yet).

        Issue 18, item 6: a long-polling POST over `max_http_buffer_size` is
        answered 413 with the contract's `payload_too_large` error, unread, and the
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
        error = PayloadTooLarge(f"a request larger than {self.max_http_buffer_size} bytes").body()
        response = await self._make_response({
            "status": "413 PAYLOAD TOO LARGE", "headers": [("Content-Type", "application/json")],
            "response": json.dumps({"error": error}).encode()}, environ)
        response.force_close()  # the body is left unread
        return response

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


class NotepackPacket(msgpack_packet.MsgPackPacket):
    """Socket.IO packets in msgpack the way socket.io-msgpack-parser (notepack.io)
    writes and checks them:

    * a field without a value is left out (JavaScript `undefined`), never sent as
      nil: the JavaScript decoder rejects a DISCONNECT whose data is `null`;
    * notepack's `undefined` (fixext 1, type 0) reads as None, and an ArrayBuffer
      or typed array (ext type 0) as bytes. Limit: a one-byte buffer holding 0
      cannot be told from `undefined` and reads as None.
    """

    @staticmethod
    def ext_hook(code, data):
        if code == 0:
            return None if data == b"\x00" else bytes(data)
        return msgpack_packet.msgpack.ExtType(code, data)

    def _to_dict(self):
        d = {"type": self.packet_type, "nsp": self.namespace or "/"}
        if self.data is not None:
            d["data"] = self.data
        if self.id is not None:
            d["id"] = self.id
        return d


#: The serializer of the hub's msgpack endpoint.
MSGPACK_PACKET = NotepackPacket


class ProtocolServer(socketio.AsyncServer):
    """python-socketio's asyncio server with the fixes of issue 6 (see module).

    Extra options:

    * `connect_timeout` (seconds, default 45 like Node's connectTimeout): an
      Engine.IO session that has not connected to any namespace by then, or has
      left its last one that long ago, is closed;
    * `max_attachments` (default 16): a binary packet announcing more binary
      attachments than this closes the connection, and so does one whose
      attachments add up to more than the Engine.IO server's
      `max_http_buffer_size` (one packet's limit) (issue 18, item 1:
      python-socketio buffered every frame that followed a header, unbounded)."""

    #: Seconds between a websocket's CONNECT reply and the events its connect handler
    #: emitted (`_connect_written`). 0 here; the conformance server (hub/conformance.py)
    #: waits longer, for the suites' one-frame-per-read client on a loaded machine.
    connect_pause = 0.0

    def __init__(self, *args, connect_timeout: float = 45.0, max_attachments: int = 16, **kwargs):
        self._options = dict(kwargs, connect_timeout=connect_timeout, max_attachments=max_attachments)
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.max_attachments = max_attachments
        # namespace -> {sid: [(event, data, callback), ...]}: the events held for sockets
        # whose connect handler runs (item 6). hub.transport.HubServer.settle_held
        # reorders these lists in place: keep this shape.
        self._connecting: dict[str, dict[str, list]] = {}
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}

    def _engineio_server_class(self):
        return ProtocolEngineIOServer

    def sibling(self, **overrides) -> "ProtocolServer":
        """A new server of this class with the same options, some overridden (the
        hub's msgpack endpoint: `sibling(serializer="msgpack", client_manager=...)`).
        A client manager serves one server: pass a new one if this one has one."""
        return type(self)(**{**self._options, **overrides})

    # -- item 6 and 7: CONNECT ------------------------------------------------------

    def connect_reply(self, sid, namespace) -> dict:
        """The data of the CONNECT packet that accepts `sid` in `namespace`."""
        return {"sid": sid}

    async def emit(self, event, data=None, to=None, room=None, skip_sid=None, namespace=None,
                   callback=None, ignore_queue=False):
        """Item 6: events for a socket whose connect handler is still running are
        held and sent right after its CONNECT packet, as Node sends them (its
        `connection` handler runs after the CONNECT). python-socketio sent them
        before the CONNECT, and the client dropped or misread them.

        Held recipients are taken out of the broadcast with `skip_sid`, so this
        holds whatever client manager delivers the rest."""
        held = self._connecting.get(namespace or "/")
        if held:
            target = to if to is not None else room
            skip = [] if skip_sid is None else list(skip_sid) if isinstance(skip_sid, (list, tuple, set)) else [skip_sid]
            rooms = self.manager.rooms.get(namespace or "/", {})
            if target is None:
                names = None
            elif isinstance(target, str):
                names = [target]
            else:
                names = list(target)
            caught = [sid for sid in held if sid not in skip
                      and (names is None or any(sid in rooms.get(r, ()) for r in names))]
            for sid in caught:
                held[sid].append((event, data, callback))
            if caught:
                if names is not None and all(r in held for r in names):
                    return  # addressed only to held sockets
                skip_sid = skip + caught
        return await super().emit(event, data, to=to, room=room, skip_sid=skip_sid, namespace=namespace,
                                  callback=callback, ignore_queue=ignore_queue)

    async def _handle_connect(self, eio_sid, namespace, data):
        """A CONNECT (python-socketio's, with items 6 and 7):

        * item 7: a CONNECT to an unknown namespace is answered
          `{"message": "Invalid namespace"}` like Node; python-socketio sent the
          bare string "Unable to connect", which the JavaScript client shows as
          an empty error message;
        * item 6: see `emit`; the CONNECT data comes from `connect_reply`."""
        namespace = namespace or "/"
        if data is not None and not isinstance(data, dict):
            raise ValueError("CONNECT payload must be an object")
        if not (namespace in self.handlers or namespace in self.namespace_handlers
                or self.namespaces == "*" or namespace in self.namespaces):
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT_ERROR, data={"message": "Invalid namespace"}, namespace=namespace))
            return
        sid = await self.manager.pre_connect(eio_sid, namespace)
        if sid is None:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT_ERROR, data={"message": "Already connected"}, namespace=namespace))
            return
        if self.always_connect:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT, self.connect_reply(sid, namespace), namespace=namespace))
            await self.manager.connect(sid, namespace)
        held: list = []
        self._connecting.setdefault(namespace, {})[sid] = held
        try:
            await self._connect_and_flush(eio_sid, namespace, sid, data, held)
        finally:
            waiting = self._connecting.get(namespace, {})
            waiting.pop(sid, None)
            if not waiting:
                self._connecting.pop(namespace, None)

    async def _connect_and_flush(self, eio_sid, namespace, sid, data, held: list) -> None:
        """Run the connect handler, answer, and send what was held. The socket stays
        held until the last held event is out: a live event that comes meanwhile
        queues behind them instead of overtaking them."""
        fail_reason = sio_exceptions.ConnectionRefusedError().error_args
        try:
            success = await self._run_connect_handler(eio_sid, namespace, sid, data)
        except sio_exceptions.ConnectionRefusedError as exc:
            fail_reason, success = exc.error_args, False
        except ConnectionRefusedError:
            fail_reason, success = {"message": "Connection refused by server"}, False

        if success is False:
            held.clear()
            if self.always_connect:
                self.manager.pre_disconnect(sid, namespace)
                await self._send_packet(eio_sid, self.packet_class(
                    sio_packet.DISCONNECT, data=fail_reason, namespace=namespace))
            else:
                await self._send_packet(eio_sid, self.packet_class(
                    sio_packet.CONNECT_ERROR, data=fail_reason, namespace=namespace))
            await self.manager.disconnect(sid, namespace, ignore_queue=True)
            return
        if not self.always_connect:
            await self._send_packet(eio_sid, self.packet_class(
                sio_packet.CONNECT, self.connect_reply(sid, namespace), namespace=namespace))
            await self.manager.connect(sid, namespace)
        self._cancel_connect_timer(eio_sid)
        if held:
            await self._connect_written(eio_sid)
        sent = 0
        while sent < len(held):  # grows while it is sent
            event, event_data, callback = held[sent]
            sent += 1
            await super().emit(event, event_data, to=sid, namespace=namespace, callback=callback)

    async def _connect_written(self, eio_sid) -> None:
        """Item 6: on a websocket, the CONNECT reply leaves in a write of its own,
        and the events held for it follow `connect_pause` later (0: the next loop
        iteration). Without this they left in one write, and a client that takes one
        frame from each read (the official protocol suites' reader) lost the second.

        The reply was queued; the driver writes it before this coroutine resumes
        (LeanWebSocket flushes with `call_soon`, the aiohttp driver's writer task was
        woken by the put). What comes next goes through the manager's gathered
        frames or the queue, so broadcasts keep their one write per socket. While
        the transport is paused (a slow reader) the reply waits in the queue and the
        events queue behind it: the order holds, the boundary does not. Long-polling
        is left as it was: one poll response carries the reply and the events."""
        s = self.eio.sockets.get(eio_sid)
        if s is not None and s.upgraded:
            await asyncio.sleep(self.connect_pause)

    async def _run_connect_handler(self, eio_sid, namespace, sid, data):
        environ = self.environ[eio_sid]
        if data:
            return await self._trigger_event("connect", namespace, sid, environ, data)
        try:
            return await self._trigger_event("connect", namespace, sid, environ, None)
        except TypeError as exc:
            try:
                return await self._trigger_event("connect", namespace, sid, environ)
            except TypeError:
                raise exc

    # -- connect timeout, malformed packets -------------------------------------------

    async def _handle_eio_connect(self, eio_sid, environ):
        """Node's connectTimeout: a session that joins no namespace is closed."""
        await super()._handle_eio_connect(eio_sid, environ)
        self._start_connect_timer(eio_sid)

    def _start_connect_timer(self, eio_sid):
        if self.connect_timeout and eio_sid not in self._connect_timers:
            loop = asyncio.get_running_loop()
            self._connect_timers[eio_sid] = loop.call_later(
                self.connect_timeout, lambda: asyncio.ensure_future(self._connect_timed_out(eio_sid)))

    async def _handle_disconnect(self, eio_sid, namespace, reason=None):
        """A session that leaves its last namespace gets the connect timeout again
        (issue 18, item 1): it serves nothing, and must not stay open for free."""
        await super()._handle_disconnect(eio_sid, namespace, reason)
        if eio_sid in self.environ and not self._in_a_namespace(eio_sid):
            self._start_connect_timer(eio_sid)

    def _in_a_namespace(self, eio_sid) -> bool:
        return any(self.manager.sid_from_eio_sid(eio_sid, ns) for ns in list(self.manager.get_namespaces()))

    def _cancel_connect_timer(self, eio_sid):
        timer = self._connect_timers.pop(eio_sid, None)
        if timer is not None:
            timer.cancel()

    async def _connect_timed_out(self, eio_sid):
        self._connect_timers.pop(eio_sid, None)
        if eio_sid in self.environ and not self._in_a_namespace(eio_sid):
            log.info("%s: no namespace joined within connect_timeout (%ss), closing", eio_sid,
                     self.connect_timeout)
            await self._close_eio(eio_sid)

    async def _close_eio(self, eio_sid):
        try:
            s = self.eio._get_socket(eio_sid)
        except KeyError:
            return
        await s.close(wait=False, abort=False, reason=self.reason.TRANSPORT_ERROR)

    async def _handle_eio_disconnect(self, eio_sid, reason):
        # After: leaving its namespaces on the way out re-armed the timer (_handle_disconnect).
        await super()._handle_eio_disconnect(eio_sid, reason)
        self._cancel_connect_timer(eio_sid)

    @staticmethod
    def _malformed(pkt, binary: bool = False) -> bool:
        kind = pkt.packet_type
        if not isinstance(kind, int) or not 0 <= kind <= 6 or \
                (pkt.namespace is not None and not isinstance(pkt.namespace, str)):
            return True
        if kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
            return not (isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str))
        if kind in (sio_packet.ACK, sio_packet.BINARY_ACK):
            return not isinstance(pkt.data, list) or pkt.id is None
        if kind in (sio_packet.CONNECT_ERROR,):
            return True  # only a server sends it
        return False

    async def _handle_eio_message(self, eio_sid, data):
        """python-socketio's dispatch, decoding each packet once, where a packet
        that is not valid Socket.IO (undecodable, an event without a name, an ack
        without an id or argument list, a stray attachment) closes the connection
        like Node. python-socketio logged the error and kept the connection."""
        try:
            pending = self._binary_packet.get(eio_sid)
            if pending is not None:
                pending.buffered += len(data)
                if pending.buffered > self.eio.max_http_buffer_size:
                    raise PacketTooLarge(f"binary attachments over {self.eio.max_http_buffer_size} bytes")
                if pending.add_attachment(data):
                    del self._binary_packet[eio_sid]
                    if pending.packet_type == sio_packet.BINARY_EVENT:
                        await self._handle_event(eio_sid, pending.namespace, pending.id, pending.data)
                    else:
                        await self._handle_ack(eio_sid, pending.namespace, pending.id, pending.data)
                return
            pkt = self.packet_class(encoded_packet=data)
            kind = pkt.packet_type
            if kind in (sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK) and pkt.attachment_count:
                if self._malformed(pkt, binary=True) or \
                        not self.manager.sid_from_eio_sid(eio_sid, pkt.namespace or "/"):
                    raise ValueError("unexpected binary packet")
                if pkt.attachment_count > self.max_attachments:
                    raise PacketTooLarge(f"{pkt.attachment_count} binary attachments announced, "
                                         f"over {self.max_attachments}")
                pkt.buffered = len(data)  # bytes held for this packet until its last attachment
                self._binary_packet[eio_sid] = pkt
            elif self._malformed(pkt):
                raise ValueError("malformed packet")
            elif kind == sio_packet.CONNECT:
                await self._handle_connect(eio_sid, pkt.namespace, pkt.data)
            elif kind == sio_packet.DISCONNECT:
                await self._handle_disconnect(eio_sid, pkt.namespace, self.reason.CLIENT_DISCONNECT)
            elif kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
                await self._handle_event(eio_sid, pkt.namespace, pkt.id, pkt.data)
            elif kind in (sio_packet.ACK, sio_packet.BINARY_ACK):
                await self._handle_ack(eio_sid, pkt.namespace, pkt.id, pkt.data)
            else:
                raise ValueError("unexpected packet type")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            self._binary_packet.pop(eio_sid, None)
            if isinstance(exc, PacketTooLarge):
                log.warning("%s: %s, closing the connection", eio_sid, exc)
            else:
                self.logger.info("%s: invalid Socket.IO packet (%s), closing", eio_sid, exc)
            await self._close_eio(eio_sid)
