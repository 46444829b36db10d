"""python-socketio's asyncio server (socketio.AsyncServer) keeping the Socket.IO v5
protocol the way Node's reference server does (issue 6, docs/protocol.md): CONNECT
(items 6 and 7), the connect timeout, malformed packets, bounded binary
attachments, acks of JSON replies. Its Engine.IO server is
`engineio_server_class`. The private names of python-socketio it overrides or
reads are listed in engine/internals.py."""
from __future__ import annotations

import asyncio
import contextvars
import logging

import socketio
from socketio import exceptions as sio_exceptions
from socketio import packet as sio_packet

from engine.engineio_server import ProtocolEngineIOServer
from engine.errors import PacketTooLarge

log = logging.getLogger("hub.protocol")

# True while handling an event whose sender asked for an ack. Each event runs in
# its own task (async_handlers), so the value belongs to that one event.
WANTS_ACK: contextvars.ContextVar[bool] = contextvars.ContextVar("wants_ack", default=True)

#: One held event: (event, data, callback).
HeldEvent = tuple


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
      python-socketio buffered every frame that followed a header, unbounded).

    A namespace handler with `json_replies = True` (every reply is JSON data) has
    its acks sent without python-socketio's recursive search of the reply for bytes.
    `WANTS_ACK` tells an event handler whether its sender asked for an ack."""

    #: The Engine.IO server class; a subclass may name its own subclass of it.
    engineio_server_class: type[ProtocolEngineIOServer] = ProtocolEngineIOServer
    #: Seconds between a websocket's CONNECT reply and the events its connect handler
    #: emitted (`_connect_written`). 0 here; the conformance server (engine/conformance.py)
    #: waits longer, for the suites' one-frame-per-read client on a loaded machine.
    connect_pause = 0.0

    def __init__(self, *args, connect_timeout: float = 45.0, max_attachments: int = 16, **kwargs):
        self._options = dict(kwargs, connect_timeout=connect_timeout, max_attachments=max_attachments)
        super().__init__(*args, **kwargs)
        self.connect_timeout = connect_timeout
        self.max_attachments = max_attachments
        # namespace -> {sid: [(event, data, callback), ...]}: the events held for sockets
        # whose connect handler runs (item 6); `held_events` gives a subclass one list.
        self._connecting: dict[str, dict[str, list]] = {}
        self._connect_timers: dict[str, asyncio.TimerHandle] = {}

    def _engineio_server_class(self):
        return self.engineio_server_class

    def held_events(self, sid: str, namespace: str | None) -> list[HeldEvent] | None:
        """The events held for `sid` while its connect handler runs (item 6), in the
        order they will be sent after its CONNECT, or None when none is held. The
        caller may reorder or drop items of this list in place, before the connect
        handler returns."""
        return self._connecting.get(namespace or "/", {}).get(sid)

    async def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):
        WANTS_ACK.set(id is not None)
        if id is None or not getattr(server.namespace_handlers.get(namespace), "json_replies", False):
            return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
        # python-socketio's own, less its recursive search of every reply for bytes:
        # a JSON reply has none.
        reply = await server._trigger_event(data[0], namespace, sid, *data[1:])
        if reply != self.not_handled:
            await server._send_packet(eio_sid, self.packet_class(
                sio_packet.ACK, namespace=namespace, id=id, data=[] if reply is None else [reply], binary=False))

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
                self.connect_timeout, lambda: self.eio.tasks.spawn(self._connect_timed_out(eio_sid)))

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
