"""Plain-WebSocket and SSE connections as members of the hub's rooms.

`Fanout._emit_local` delivers each event once to the Socket.IO servers' rooms and
once to `Members.emit` here: the same log, the same order, the same offsets; no
second fan-out. Each connection kind renders an event into its own frame once per
event (`Kind.frame`), and every member of that kind gets the same frame."""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Awaitable, Callable, Protocol

from engine import RoomWatcher, ws_frame
from hub.delivery.recovery import after_head

log = logging.getLogger("hub.gateways")

# Websocket close codes (RFC 6455 and the 4000s of applications): the hub's reasons.
REVOKED, TOO_SLOW, GOING_AWAY = 4401, 1013, 1001

# A frame is the text to send, or (rarely: an EduStream message whose sender's email
# is not cached yet) a future of it, shared by every recipient of the event.
Frame = str | asyncio.Future


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a plain connection failed: %r", task.exception())


class Kind(Protocol):
    def frame(self, namespace: str, event: str, data: dict, offset: str | None) -> Frame | None:
        """The frame of a server event for this kind of connection, or None: not sent."""


def _render(kind: Kind, namespace: str, event: str, data: dict, offset: str | None) -> Frame | None:
    """A kind's frame; a mapping that fails on odd data (a published event, say) skips
    that event for its kind, never the delivery to everyone else."""
    try:
        return kind.frame(namespace, event, data, offset)
    except Exception:
        log.exception("could not render %s %s for %s", namespace, event, type(kind).__name__)
        return None


class Member:
    """One plain connection. Frames queue here and one writer task sends them in
    order; a connection that lets more than `max_pending` frames pile up is closed
    (its client reconnects and resumes), so a slow reader costs bounded memory."""

    __slots__ = ("sid", "kind", "_send", "_close", "direct", "_busy", "max_pending", "_queue", "_wake", "_held",
                 "closed")

    def __init__(self, sid: str, kind: Kind, send: Callable[[str], Awaitable[None]],
                 close: Callable[[int, str], Awaitable[None]], *, max_pending: int = 1000,
                 direct: Callable[[], asyncio.Transport | None] | None = None) -> None:
        self.sid, self.kind = sid, kind
        self._send, self._close = send, close
        # A websocket's transport, when a ready frame may be written to it at once
        # (engine.ready_transport): with nothing queued or in flight, a broadcast
        # then costs a write, not a task wakeup, as for Socket.IO sockets.
        self.direct = direct
        self._busy = False
        self.max_pending = max_pending
        self._queue: deque[Frame] = deque()
        self._wake = asyncio.Event()
        # While a resuming connection replays what it missed, live frames wait here.
        self._held: list[tuple[str, str | None, Frame]] | None = None
        self.closed = False

    def push(self, namespace: str, offset: str | None, frame: Frame, wire: bytes | None = None) -> None:
        """Queue a frame; `wire`, its websocket frame, is written at once when it can be."""
        if self._held is not None:
            self._held.append((namespace, offset, frame))
            return
        if wire is not None and not self._queue and not self._busy and not self.closed:
            transport = self.direct()
            if transport is not None:
                transport.write(wire)
                return
        if len(self._queue) >= self.max_pending:
            if not self.closed:
                log.warning("closing plain connection %s: %d frames unread", self.sid, len(self._queue))
            self.close(TOO_SLOW, "too slow: reconnect and resume")
            return
        self._queue.append(frame)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """End the connection (a websocket close code; SSE just ends the stream). Not
        awaited: a websocket's close waits for the peer's answer, and the bus reader
        that revokes a token must not."""
        if self.closed:
            return
        self.closed = True
        asyncio.ensure_future(self._close(code, reason)).add_done_callback(_retrieve)

    def send(self, frame: str) -> None:
        """A frame of this connection's own (a reply), in order with the events."""
        self._queue.append(frame)
        self._wake.set()

    def hold(self) -> None:
        self._held = []

    def release(self, replayed: list[tuple[str, str, Frame]], heads: dict[str, str | None]) -> None:
        """Send what a resuming connection missed, then the live frames that came
        meanwhile: of a resumed namespace (`heads`: its replay's head) only those
        `after_head`, as the replay had the rest (nothing twice, nothing lost)."""
        held, self._held = self._held or [], None
        for namespace, offset, frame in replayed:
            if frame is not None:  # a kind may not send an event (Kind.frame)
                self.push(namespace, offset, frame)
        for namespace, offset, frame in held:
            if namespace not in heads or after_head(offset, heads[namespace]):
                self.push(namespace, offset, frame)

    async def run(self) -> None:
        """The writer: until cancelled or the connection fails."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                frame = self._queue.popleft()
                self._busy = True
                try:
                    if not isinstance(frame, str):
                        frame = await frame
                    await self._send(frame)
                finally:
                    self._busy = False


class Members:
    """Rooms of plain connections, by namespace, as the Socket.IO manager keeps its
    sockets'. A namespace without members has no entry, so the fan-out's check for
    them costs one dict lookup."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, set[Member]]] = {}
        self.by_sid: dict[str, Member] = {}
        self._joined: dict[str, set[tuple[str, str]]] = {}  # sid -> {(namespace, room)}
        self.kinds: dict[str, Kind] = {}  # one per gateway (hub/adapters/gateways/plainws.kind_of)
        # Told as rooms fill and empty, as the Socket.IO managers' (engine.RoomWatcher).
        self.watcher: RoomWatcher | None = None

    def add(self, member: Member) -> None:
        self.by_sid[member.sid] = member
        self._joined.setdefault(member.sid, set())

    async def enter(self, namespace: str, room: str, member: Member) -> None:
        """Joined once the watcher is ready for the room: what is sent to it from
        then on reaches the member."""
        ns_rooms = self.rooms.setdefault(namespace, {})
        members = ns_rooms.get(room)
        if members is None:
            members = ns_rooms[room] = set()
            if self.watcher is not None:
                self.watcher.occupied(namespace, room)
        members.add(member)
        self._joined[member.sid].add((namespace, room))
        if self.watcher is not None:
            await self.watcher.ready(namespace, room)

    def leave(self, namespace: str, room: str, member: Member) -> None:
        ns_rooms = self.rooms.get(namespace)
        members = ns_rooms.get(room) if ns_rooms else None
        if members is not None:
            members.discard(member)
            if not members:
                del ns_rooms[room]
                if not ns_rooms:
                    del self.rooms[namespace]
                if self.watcher is not None:
                    self.watcher.vacated(namespace, room)
        self._joined.get(member.sid, set()).discard((namespace, room))

    def rooms_of(self, member: Member, namespace: str) -> set[str]:
        return {room for ns, room in self._joined.get(member.sid, ()) if ns == namespace}

    def remove(self, member: Member) -> None:
        for namespace, room in list(self._joined.get(member.sid, ())):
            self.leave(namespace, room, member)
        self._joined.pop(member.sid, None)
        self.by_sid.pop(member.sid, None)

    def emit(self, namespace: str, event: str, data: dict, rooms: list[str], skip_sid: str | list[str] | None,
             offset: str | None) -> int:
        """Queue the event for every member of `rooms` (once each, as Socket.IO does);
        returns how many got it."""
        ns_rooms = self.rooms.get(namespace)
        if not ns_rooms:
            return 0
        if len(rooms) == 1:  # the common case: no set to build, nobody twice anyway
            targets = tuple(ns_rooms.get(rooms[0]) or ())
        else:
            targets = set()
            for room in rooms:
                members = ns_rooms.get(room)
                if members:
                    targets.update(members)
        frames: dict[int, tuple] = {}  # id(kind) -> (frame, its websocket frame or None)
        reached = 0
        skipped = skip_sid if isinstance(skip_sid, list) else () if skip_sid is None else (skip_sid,)
        kind = frame = wire = None  # the last member's kind and its frames: mostly one kind a room
        for member in targets:
            if skipped and member.sid in skipped:
                continue
            if member.kind is not kind:
                kind = member.kind
                rendered = frames.get(id(kind))
                if rendered is None:
                    frame = _render(kind, namespace, event, data, offset)
                    rendered = frames[id(kind)] = (frame, ws_frame(frame) if isinstance(frame, str) else None)
                frame, wire = rendered
            if frame is None:
                continue
            reached += 1
            # The fast path of `push`, inline (a broadcast's per-member cost): nothing
            # held, queued or in flight, and the websocket ready for a write.
            if (wire is not None and member.direct is not None and member._held is None and not member._queue
                    and not member._busy and not member.closed):
                transport = member.direct()
                if transport is not None:
                    transport.write(wire)
                    continue
            member.push(namespace, offset, frame, wire if member.direct is not None else None)
        return reached
