"""An Engine.IO v4 session (python-engineio's AsyncSocket) that keeps the protocol
the way Node's engine.io does (issue 6, docs/protocol.md): long-polling, the
heartbeat, closing, and the websocket transport. The private names of
python-engineio it overrides or reads are listed in engine/internals.py."""
from __future__ import annotations

import asyncio
import time

from engineio import async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio import payload as eio_payload

from engine.errors import BodyLost, DuplicatePoll, DuplicatePost, MalformedPayload, log_oversized



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
        (engine.engineio_server.ProtocolEngineIOServer). A POST that arrives while another one's body is
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
            self.server.tasks.spawn(self.close(wait=False, abort=False, reason=self.server.reason.PING_TIMEOUT))

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
            # A driver that took the connection over (engine.websocket.LeanWebSocket)
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
        check = self.server.tasks.spawn(self._end_poll_during_upgrade())
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

        A driver with `attach` (engine.websocket.LeanWebSocket) reads and writes
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

        writer_task = self.server.tasks.spawn(writer())
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

