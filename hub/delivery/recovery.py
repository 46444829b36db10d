"""Socket.IO connection state recovery, as the official clients speak it.

The CONNECT reply carries a private session id (`pid`); every durable server event
carries its log offset as its last argument. A client that reconnects with
`{pid, offset}` in its CONNECT data, to any instance, within the window, gets its
rooms back and every event it missed, in order, under the same pid (so the JS client
sets `socket.recovered`). It must still present a valid token for the same identity:
a revoked or expired token is refused at connect, never restored.

Session records live in Redis when configured (in memory otherwise: the stores are
in hub/backends/sessions/), so they survive
the instance that wrote them: a live instance refreshes its sockets' records, a
disconnect (or the refreshes stopping, when an instance dies) starts the window."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Sequence

from redis.exceptions import RedisError

from engine import cancel_and_wait
from hub.backends.sessions import SessionRecord, Sessions
from hub.backends.bus import Broker, BrokerUnavailable, offset_key, valid_offset
from hub.delivery.records import Replayed, missed_by

log = logging.getLogger("hub.delivery.recovery")

# Seconds a recovery waits for this instance's bus to catch up with the log it
# replayed from (a busy instance reads the bus a little behind Redis).
REPLAY_SETTLE = 3.0


def after_head(offset: str | None, head: str | None) -> bool:
    """Whether a live event held for a recovering connection is sent after the replay:
    one up to the replay's `head` was in the log it read (sent by the replay if it was
    the connection's, else not at all); a volatile one (no offset) always is."""
    return offset is None or head is None or offset_key(offset) > offset_key(head)


@dataclass(frozen=True, slots=True)
class Restored:
    """A session that a reconnecting client asked to recover, found: its private
    session id, its record, and the offset to replay the log after."""

    pid: str
    record: SessionRecord
    offset: str


def identity(actor) -> str:
    """Who a session belongs to: a recovering token must be the same identity's."""
    return f"{actor.role}:{actor.id}:{actor.name}:{actor.visitor_id}:{actor.dialog_id}:{actor.assistant_id}"


class Recovery:
    def __init__(self, sessions: Sessions, broker: Broker, *, window: float, max_replay: int = 10000,
                 replayed: Callable[[str, str, str], None] | None = None) -> None:
        self.sessions = sessions
        self.broker = broker
        # Told (namespace, sid, head) of every replay, so that live delivery sends the
        # socket nothing up to `head` again (Fanout.replayed).
        self.replayed = replayed
        self.window = window
        self.max_replay = max_replay
        self.live: dict[tuple[str, str], tuple[str, SessionRecord]] = {}  # (namespace, sid) -> (pid, record)
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.window > 0

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._refresh_forever(), name="recovery-refresh")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.sessions.close()

    @staticmethod
    def new_pid() -> str:
        return secrets.token_urlsafe(18)

    async def lookup(self, namespace: str, auth, actor) -> Restored | None:
        """The session, when the CONNECT data asks for a recovery of this identity's
        session in this namespace; None otherwise (the client gets a new session)."""
        if not (self.enabled and isinstance(auth, dict)):
            return None
        pid, offset = auth.get("pid"), auth.get("offset")
        if not isinstance(pid, str) or len(pid) > 64 or not (offset is None or valid_offset(offset)):
            return None
        try:
            record = await self.sessions.get(pid)
        except (RedisError, OSError) as exc:
            log.warning("recovery of a session failed, starting a new one: %s", exc)
            return None
        if record is None or record.namespace != namespace or record.identity != identity(actor):
            return None
        # No offset: the client got no durable event in that session, so it
        # missed everything since the session began.
        return Restored(pid, record, offset or record.start)

    async def missed(self, namespace: str, rooms: Sequence[str], old_sid: str | None,
                     offset: str) -> Replayed | None:
        """The events of `rooms` after `offset`, but the old socket's own, read to the
        log's newest (call it once the socket is in its rooms, so that what comes after
        is live); None when they cannot be replayed (more than `max_replay` of them,
        or no log)."""
        try:
            replay = await self.broker.replay(namespace, offset, missed_by(rooms, old_sid), self.max_replay)
        except (RedisError, BrokerUnavailable, OSError) as exc:
            log.warning("recovery of a session failed, starting a new one: %s", exc)
            return None
        return None if replay is None else Replayed.from_wire(replay.entries, replay.head)

    async def resume(self, namespace: str, rooms: Sequence[str], old_sid: str | None, offset: str,
                     enter: Callable[[list[str]], Awaitable[None]] | None = None, *,
                     sid: str) -> Replayed | None:
        """A recovery without a gap, the one way every transport (Socket.IO, /ws, SSE)
        does it: `rooms` and `old_sid` are the session's (`Restored.record`), or
        those of an SSE stream, which has no session record. The transport holds
        live events for the connection from before it enters any room.
        `enter(rooms)` puts it back in the session's rooms it may still be in;
        from then on an event of those rooms reaches it live (held). The
        log is then read to its head, and a bus barrier waits until every event
        published before the read ended has reached this instance (so has been held).
        The transport sends `entries`, then the held live events `after_head(offset,
        head)`, in offset order: none lost, none twice. None: not recoverable (the
        client re-reads with `sync`); the transport leaves the rooms `enter` added.

        The barrier can fail: the bus lags more than REPLAY_SETTLE, or this
        instance's subscription is down (Redis just came back) and its catch-up will
        bring the log's events later. Either way, live events up to `head` then reach
        this instance after the connection settled; `replayed` keeps them from
        reaching the connection (`sid`, the new one) a second time."""
        if enter is not None:
            await enter(list(rooms))
        replay = await self.missed(namespace, rooms, old_sid, offset)
        if replay is not None and replay.head:
            if self.replayed is not None:
                self.replayed(namespace, sid, replay.head)
            if not await self.broker.barrier(REPLAY_SETTLE):
                log.warning("the bus did not catch up with %s's log in time for a recovery", namespace)
        return replay

    async def track(self, namespace: str, sid: str, pid: str, actor, rooms: list[str],
                    start: str | None = None) -> None:
        """Record a connected socket's session. `start`: where its events begin in
        the log (a recovered session keeps its own); a new one starts a little
        before now, as offsets come from Redis' clock."""
        start = start or f"{int((time.time() - 2) * 1000)}-0"
        record = SessionRecord(namespace, identity(actor), tuple(sorted(set(rooms))), sid, start)
        self.live[(namespace, sid)] = (pid, record)
        await self._save(pid, record)

    async def rooms_changed(self, namespace: str, sid: str, joined: Iterable[str], left: Iterable[str]) -> None:
        """A live socket left rooms, then joined rooms: its record follows. From the
        record's own rooms, not the manager's: asking python-socketio for a socket's
        rooms walks every room of the namespace, a cost that grows with the number of
        connections (every one has its user's room) and was paid on every join."""
        found = self.live.get((namespace, sid))
        if found:
            pid, record = found
            rooms = (set(record.rooms) - set(left)) | set(joined)
            record = dataclasses.replace(record, rooms=tuple(sorted(rooms)))
            self.live[(namespace, sid)] = (pid, record)
            await self._save(pid, record)

    async def gone(self, namespace: str, sid: str, *, keep: bool) -> None:
        """A socket left: keep its record for the window (it may come back), or drop it
        when the client itself disconnected on purpose."""
        found = self.live.pop((namespace, sid), None)
        if not found:
            return
        pid, record = found
        try:
            if keep:
                await self.sessions.save(pid, record, self.window)
            else:
                await self.sessions.delete(pid)
        except (RedisError, OSError) as exc:
            log.warning("could not update a session record: %s", exc)

    async def _save(self, pid: str, record: SessionRecord) -> None:
        try:
            await self.sessions.save(pid, record, self.window)
        except (RedisError, OSError) as exc:
            log.warning("could not save a session record: %s", exc)

    async def _refresh_forever(self) -> None:
        """Live sockets' records are refreshed well within the window, so when an
        instance dies its sockets stay recoverable for about one window."""
        while True:
            await asyncio.sleep(max(self.window / 3, 0.5))
            pids = [pid for pid, _ in self.live.values()]
            try:
                for i in range(0, len(pids), 1000):
                    await self.sessions.touch(pids[i:i + 1000], self.window)
            except (RedisError, OSError) as exc:
                log.warning("could not refresh session records: %s", exc)
