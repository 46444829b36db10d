"""Socket.IO connection state recovery, as the official clients speak it.

The CONNECT reply carries a private session id (`pid`); every durable server event
carries its log offset as its last argument. A client that reconnects with
`{pid, offset}` in its CONNECT data, to any instance, within the window, gets its
rooms back and every event it missed, in order, under the same pid (so the JS client
sets `socket.recovered`). It must still present a valid token for the same identity:
a revoked or expired token is refused at connect, never restored.

Session records live in Redis when configured (in memory otherwise), so they survive
the instance that wrote them: a live instance refreshes its sockets' records, a
disconnect (or the refreshes stopping, when an instance dies) starts the window."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from abc import ABC, abstractmethod
from typing import Awaitable, Callable

import msgpack
from redis.exceptions import RedisError

from hub.broker import Broker, BrokerUnavailable, Replay, offset_key, valid_offset
from hub.redis_client import redis_client

log = logging.getLogger("hub.delivery.recovery")

# Seconds a recovery waits for this instance's bus to catch up with the log it
# replayed from (a busy instance reads the bus a little behind Redis).
REPLAY_SETTLE = 3.0


def after_head(offset: str | None, head: str | None) -> bool:
    """Whether a live event held for a recovering connection is sent after the replay:
    one up to the replay's `head` was in the log it read (sent by the replay if it was
    the connection's, else not at all); a volatile one (no offset) always is."""
    return offset is None or head is None or offset_key(offset) > offset_key(head)


class Sessions(ABC):
    @abstractmethod
    async def save(self, pid: str, record: dict, ttl: float) -> None: ...

    @abstractmethod
    async def get(self, pid: str) -> dict | None: ...

    @abstractmethod
    async def touch(self, pids: list[str], ttl: float) -> None: ...

    @abstractmethod
    async def delete(self, pid: str) -> None: ...

    async def close(self) -> None:
        pass


class MemorySessions(Sessions):
    def __init__(self) -> None:
        self._records: dict[str, tuple[float, dict]] = {}

    async def save(self, pid: str, record: dict, ttl: float) -> None:
        self._records[pid] = (time.monotonic() + ttl, record)

    async def get(self, pid: str) -> dict | None:
        found = self._records.get(pid)
        if found is None or found[0] < time.monotonic():
            self._records.pop(pid, None)
            return None
        return found[1]

    async def touch(self, pids: list[str], ttl: float) -> None:
        until = time.monotonic() + ttl
        for pid in pids:
            if pid in self._records:
                self._records[pid] = (until, self._records[pid][1])
        now = time.monotonic()
        self._records = {k: v for k, v in self._records.items() if v[0] >= now}

    async def delete(self, pid: str) -> None:
        self._records.pop(pid, None)


class RedisSessions(Sessions):
    def __init__(self, url: str, prefix: str) -> None:
        self.redis = redis_client(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix

    def _key(self, pid: str) -> str:
        return f"{self.prefix}:session:{pid}"

    async def save(self, pid: str, record: dict, ttl: float) -> None:
        await self.redis.set(self._key(pid), msgpack.packb(record), px=int(ttl * 1000))

    async def get(self, pid: str) -> dict | None:
        raw = await self.redis.get(self._key(pid))
        return msgpack.unpackb(raw) if raw else None

    async def touch(self, pids: list[str], ttl: float) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for pid in pids:
                pipe.pexpire(self._key(pid), int(ttl * 1000))
            await pipe.execute()

    async def delete(self, pid: str) -> None:
        await self.redis.delete(self._key(pid))

    async def close(self) -> None:
        await self.redis.aclose()


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
        self.live: dict[tuple[str, str], tuple[str, dict]] = {}  # (namespace, sid) -> (pid, record)
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.window > 0

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._refresh_forever(), name="recovery-refresh")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.sessions.close()

    @staticmethod
    def new_pid() -> str:
        return secrets.token_urlsafe(18)

    async def lookup(self, namespace: str, auth, actor) -> tuple[str, dict, str] | None:
        """(pid, record, offset to replay after) when the CONNECT data asks for a
        recovery of this identity's session in this namespace; None otherwise (the
        client gets a new session)."""
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
        if record is None or record["ns"] != namespace or record["who"] != identity(actor):
            return None
        # No offset: the client got no durable event in that session, so it
        # missed everything since the session began.
        return pid, record, offset or record["start"]

    async def missed(self, namespace: str, record: dict, offset: str) -> Replay | None:
        """The events of the session's rooms after `offset`, read to the log's newest
        (call it once the socket is in its rooms, so that what comes after is live);
        None when they cannot be replayed (more than `max_replay` of them, or no log)."""
        rooms, old_sid = set(record["rooms"]), record["sid"]
        try:
            return await self.broker.replay(
                namespace, offset, lambda e: e.get("s") != old_sid and not rooms.isdisjoint(e["r"]),
                self.max_replay)
        except (RedisError, BrokerUnavailable, OSError) as exc:
            log.warning("recovery of a session failed, starting a new one: %s", exc)
            return None

    async def resume(self, namespace: str, record: dict, offset: str,
                     enter: Callable[[list[str]], Awaitable[None]] | None = None, *, sid: str) -> Replay | None:
        """A recovery without a gap, the one way every transport (Socket.IO, /ws, SSE)
        does it. The transport holds live events for the connection from before it
        enters any room. `enter(rooms)` puts it back in the session's rooms it may
        still be in; from then on an event of those rooms reaches it live (held). The
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
            await enter(record["rooms"])
        replay = await self.missed(namespace, record, offset)
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
        record = {"ns": namespace, "who": identity(actor), "rooms": sorted(set(rooms)), "sid": sid,
                  "start": start}
        self.live[(namespace, sid)] = (pid, record)
        await self._save(pid, record)

    async def rooms_changed(self, namespace: str, sid: str, rooms: set[str]) -> None:
        found = self.live.get((namespace, sid))
        if found:
            found[1]["rooms"] = sorted(rooms)
            await self._save(*found)

    async def gone(self, namespace: str, sid: str, *, keep: bool) -> None:
        """A socket left: keep its record for the window (it may come back), or drop it
        when the client itself disconnected on purpose."""
        found = self.live.pop((namespace, sid), None)
        if not found:
            return
        try:
            if keep:
                await self.sessions.save(found[0], found[1], self.window)
            else:
                await self.sessions.delete(found[0])
        except (RedisError, OSError) as exc:
            log.warning("could not update a session record: %s", exc)

    async def _save(self, pid: str, record: dict) -> None:
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
