"""The bus between instances, and the log of recent durable events.

Two ways onto the bus:

* `publish(message)`: volatile messages (typing, presence, revocations). Every
  started broker on the bus gets it, the publisher's own included; callers filter
  by origin. On Redis, what is published while the previous PUBLISH is on its
  way (or within one loop iteration) goes out together as one batch, in order.
* `append(entries)`: durable events. Each entry is appended to its namespace's log,
  which assigns its offset, and the batch goes out on the bus with the offsets, all
  in one atomic step. Every instance, the appending one included, delivers from the
  bus, so every instance delivers durable events in offset order.

`replay(namespace, offset, wanted)` reads the log after an offset up to its newest
entry and keeps the entries a reconnecting client missed (its rooms'); `since` reads
every entry after an offset. The log keeps `retention` seconds of events.
`barrier()` returns once everything published before it has been handled here.

The bus and Redis's log are encoded with msgpack, the memory log in JSON: nothing
is ever unpickled."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, Iterator

import msgpack
import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from hub.redis_client import redis_client
from storage import jsoncodec

log = logging.getLogger("hub.broker")

Handler = Callable[[dict], Awaitable[None]]

# Seconds a command (an append, a PUBLISH) may take before its callers are told the
# bus is unavailable: acks wait for appends, and what fails goes by the outbox relay.
COMMAND_TIMEOUT = 1.0
# After a failed append, appends fail at once for this long instead of each waiting
# for its own timeout on a link that just proved dead.
RETRY_APPEND_AFTER = 1.0
SUBSCRIBE_TIMEOUT = 5.0
# An idle bus connection is PINGed this often (seconds); no answer by the next
# time means it is dead.
IDLE_PING = 1.0
READ_SIZE = 1 << 16


# Entries read per XRANGE while a replay scans the log.
REPLAY_CHUNK = 1000
# Seconds direct appends wait (in the outbox) once a relay found events left behind:
# long enough for every instance's relay to take its turn.
HOLD = 2.0


class BrokerUnavailable(Exception):
    pass


@dataclass
class Replay:
    """What a replay found: the wanted entries after the offset, oldest first, and
    the newest offset it read (None: the log had nothing after the offset). Every
    live event up to `head` was read, wanted or not."""

    entries: list[tuple[str, dict]]
    head: str | None


def scan(rows: Iterable[tuple[str, dict]], wanted: Callable[[dict], bool], replay: Replay, limit: int) -> bool:
    """Add the wanted rows to `replay`; False once more than `limit` are wanted."""
    for offset, entry in rows:
        replay.head = offset
        if wanted(entry):
            replay.entries.append((offset, entry))
    return len(replay.entries) <= limit


def _retrieve(future: asyncio.Future) -> None:
    """Mark a batch's failure as seen: its publishers may all have been cancelled."""
    if not future.cancelled():
        future.exception()


def offset_key(offset: str) -> tuple[int, int]:
    """Offsets are "<milliseconds>-<sequence>" (Redis stream ids): compare as pairs."""
    ms, _, seq = offset.partition("-")
    return int(ms), int(seq or 0)


def valid_offset(offset) -> bool:
    if not isinstance(offset, str) or len(offset) > 40:
        return False
    try:
        offset_key(offset)
        return True
    except ValueError:
        return False


class Broker(ABC):
    healthy = True
    # How many times the bus was lost: events appended meanwhile by others may have
    # been missed, and events this instance wrote may not have been appended.
    losses = 0

    def __init__(self, retention: float) -> None:
        self.retention = retention

    @abstractmethod
    async def start(self, handler: Handler) -> None: ...

    @abstractmethod
    async def publish(self, message: dict) -> None:
        """Send to every broker on the bus; raises BrokerUnavailable if it cannot."""

    def publish_soon(self, message: dict) -> Awaitable[None]:
        """Start publishing and return what to await for the outcome (as `publish`).
        A broker that can puts the message on its way before the caller's next
        await; this default publishes only when awaited."""
        return self.publish(message)

    @abstractmethod
    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        """Log durable entries (each with its "ns" and event "id") and send them, with
        their offsets, as one `{"t": "log", "o": origin, "e": entries, "x": offsets}`
        message. An id logged before is skipped (None): the log holds each event once.

        Left-behind events first: an outbox relay appending what was left behind
        (`relay`) may `hold` direct appends for HOLD seconds; meanwhile a direct
        append is refused (None, nothing logged) and its events wait in the outbox
        for the relays, behind the others'."""

    @abstractmethod
    async def since(self, namespace: str, offset: str, limit: int) -> list[tuple[str, dict]] | None:
        """Logged entries of `namespace` after `offset`, oldest first; None when more
        than `limit` are there (the caller cannot replay them all)."""

    @abstractmethod
    async def replay(self, namespace: str, offset: str, wanted: Callable[[dict], bool],
                     limit: int) -> Replay | None:
        """The `wanted` entries of `namespace` after `offset`, reading to the newest;
        None when more than `limit` are wanted. The limit counts only what is
        wanted (a client's own events), not the namespace's traffic."""

    @abstractmethod
    async def barrier(self, timeout: float) -> bool:
        """True once everything published on the bus before this call has been
        handled here (False if not within `timeout`)."""

    @abstractmethod
    async def stop(self) -> None: ...


class MemoryLog:
    """One namespace's log, in memory: each entry's offset, time, event id and encoded
    entry, in columns. A tuple per entry would be a container that the garbage
    collector tracks: minutes of them, alive until they expire, made every young
    collection scan tens of thousands of them (13-31 ms pauses at 2,000 chat
    messages/s). Strings, floats, ints and bytes are not tracked."""

    __slots__ = ("offsets", "times", "ids", "entries")

    def __init__(self) -> None:
        self.offsets: deque[str] = deque()
        self.times: deque[float] = deque()
        self.ids: deque[int] = deque()
        self.entries: deque[bytes] = deque()

    def append(self, offset: str, at: float, event_id: int, packed: bytes) -> None:
        self.offsets.append(offset)
        self.times.append(at)
        self.ids.append(event_id)
        self.entries.append(packed)

    def expire(self, before: float) -> Iterator[int]:
        """Drop the entries older than `before`; yields their event ids."""
        times = self.times
        while times and times[0] < before:
            times.popleft()
            self.offsets.popleft()
            self.entries.popleft()
            yield self.ids.popleft()


class MemoryBus:
    """An in-process bus and log; brokers sharing one behave like instances sharing Redis."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.logs: dict[str, MemoryLog] = {}
        self.logged: dict[int, float] = {}  # event id -> until when it counts as logged
        self.held_until = 0.0  # direct appends wait until then (see Broker.append)
        # Messages being handed out (numbered), and barriers waiting for those
        # numbered up to theirs to be handed out.
        self.dispatched = 0
        self.dispatching: set[int] = set()
        self.barriers: list[tuple[int, asyncio.Future]] = []
        self.last = (0, 0)

    def next_offset(self, now: float) -> str:
        ms = int(now * 1000)
        last_ms, seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
        return f"{self.last[0]}-{self.last[1]}"


class MemoryBroker(Broker):
    def __init__(self, bus: MemoryBus | None = None, retention: float = 150.0) -> None:
        super().__init__(retention)
        self.bus = bus or MemoryBus()
        self.handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        self.handler = handler
        self.bus.handlers.append(handler)

    async def publish(self, message: dict) -> None:
        # Encode and decode as Redis would, so both backends accept the same messages.
        await self._dispatch(msgpack.unpackb(msgpack.packb(message)))

    async def _dispatch(self, message: dict) -> None:
        # Delivered before the append returns: while one append delivers, the next
        # batch of entries gathers (fanout's group commit), and a batch's deliveries
        # go out in one write per socket. Delivering from a reader task instead made
        # appends smaller and more frequent: ~12% more CPU per chat message at
        # 3,000/s (docs/performance.md).
        bus = self.bus
        bus.dispatched += 1
        number = bus.dispatched
        bus.dispatching.add(number)
        try:
            for handler in list(bus.handlers):
                await handler(message)
        finally:
            bus.dispatching.discard(number)
            if bus.barriers:
                oldest = min(bus.dispatching, default=number + 1)
                for waited, done in [b for b in bus.barriers if b[0] < oldest]:
                    bus.barriers.remove((waited, done))
                    if not done.done():
                        done.set_result(None)

    async def barrier(self, timeout: float) -> bool:
        """Messages are handed to every broker in turn: wait for those being handed
        out now to be done."""
        bus = self.bus
        if not bus.dispatching:
            return True
        waiter = (bus.dispatched, asyncio.get_running_loop().create_future())
        bus.barriers.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
            return True
        except TimeoutError:
            return False
        finally:
            if waiter in bus.barriers:
                bus.barriers.remove(waiter)

    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        now = time.time()
        bus = self.bus
        if not (relay or hold) and bus.held_until > now:
            return None
        offsets: list[str | None] = []
        fresh = []
        for entry in entries:
            event_id = entry["id"]
            if bus.logged.get(event_id, 0) > now:
                offsets.append(None)
                continue
            bus.logged[event_id] = now + self.retention
            offset = bus.next_offset(now)
            stream = bus.logs.get(entry["ns"])
            if stream is None:
                stream = bus.logs[entry["ns"]] = MemoryLog()
            # Kept encoded, as Redis keeps it: a bytes object is one thing the garbage
            # collector never scans, where the decoded event is dozens (minutes of
            # them made every full collection take longer and longer). In JSON: the
            # log never leaves the process, and orjson encodes it ~3x faster than msgpack.
            stream.append(offset, now, event_id, _encode(entry))
            offsets.append(offset)
            fresh.append((offset, entry))
        for stream in bus.logs.values():
            for expired in stream.expire(now - self.retention):
                bus.logged.pop(expired, None)
        if fresh and hold:
            bus.held_until = now + HOLD
        if fresh:
            await self._dispatch({"t": "log", "o": origin, "e": [e for _, e in fresh], "x": [o for o, _ in fresh]})
        return offsets

    async def since(self, namespace: str, offset: str, limit: int) -> list[tuple[str, dict]] | None:
        after = offset_key(offset)
        log = self.bus.logs.get(namespace) or MemoryLog()
        found = [(o, packed) for o, packed in zip(log.offsets, log.entries) if offset_key(o) > after]
        return None if len(found) > limit else [(o, jsoncodec.loads(packed)) for o, packed in found]

    async def replay(self, namespace: str, offset: str, wanted: Callable[[dict], bool],
                     limit: int) -> Replay | None:
        after = offset_key(offset)
        log = self.bus.logs.get(namespace) or MemoryLog()
        rows = ((o, jsoncodec.loads(packed)) for o, packed in zip(list(log.offsets), list(log.entries))
                if offset_key(o) > after)
        found = Replay([], None)
        return found if scan(rows, wanted, found, limit) else None

    async def stop(self) -> None:
        if self.handler in self.bus.handlers:
            self.bus.handlers.remove(self.handler)


def _encode(entry: dict) -> bytes:
    try:
        return orjson.dumps(entry)
    except TypeError:  # what orjson does not take (storage/jsoncodec.py)
        return jsoncodec.dumps(entry).encode()


# KEYS: the bus channel, the hold marker, then per entry its namespace log and its
# "logged" marker. ARGV: retention in ms, the origin, the mode ("direct", "relay" or
# "hold"), the hold in ms, then each entry (msgpack). Appends and publishes
# atomically, so offsets and bus order agree on every instance. An event id already
# logged (the writer and the outbox relay both got to it) is skipped: its offset is
# returned as "" and it is not published again. A direct append while the hold
# marker is there is refused: the reply is "held", and nothing is logged. A "hold"
# append that logged anything sets the marker.
_APPEND = """
if ARGV[3] == 'direct' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 'held'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local minid = tostring(now - retention) .. '-0'
local offsets, published, entries = {}, {}, {}
local n = (#KEYS - 2) / 2
for i = 1, n do
  local entry = ARGV[i + 4]
  if redis.call('SET', KEYS[2 + n + i], 1, 'NX', 'PX', retention) then
    local offset = redis.call('XADD', KEYS[2 + i], 'MINID', '~', minid, '*', 'e', entry)
    offsets[i] = offset
    published[#published + 1] = offset
    entries[#entries + 1] = entry
  else
    offsets[i] = ''
  end
end
if #entries > 0 and ARGV[3] == 'hold' then
  redis.call('SET', KEYS[2], 1, 'PX', tonumber(ARGV[4]))
end
if #entries > 0 then
  -- A header object followed by the entries exactly as packed by the caller.
  redis.call('PUBLISH', KEYS[1], cmsgpack.pack({t = 'log', o = ARGV[2], x = published}) .. table.concat(entries))
end
return offsets
"""


class RedisBroker(Broker):
    # Read the bus with the lean reader (`_read`); False: redis-py's PubSub.
    lean_reader = True

    def __init__(self, url: str, prefix: str, retention: float = 150.0) -> None:
        super().__init__(retention)
        # Other commands (a catch-up's long XRANGE) get redis-py's usual 5 s.
        self.redis = redis_client(url, socket_connect_timeout=2, socket_timeout=5)
        self._append_down_until = 0.0
        self.prefix = prefix
        self.channel = f"{prefix}:bus"
        self.healthy = False
        self._append = self.redis.register_script(_APPEND)
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()
        self._closing = False
        # Per namespace, the newest logged entry this broker delivered: where a
        # catch-up resumes that log. Not one offset for all logs: offsets are stream
        # ids, ordered within one log only, and an entry appended to one log after
        # another's can have the lower id (in the same millisecond, `1000-0` after
        # `1000-3`); resuming every log from the newest of all skipped it (issue 17).
        self._last_offsets: dict[str, str] = {}
        self._lost_at = 0.0
        # Volatile messages (packed) waiting for the next PUBLISH, the future that
        # tells their publishers how it went, and the task and connection that send
        # them: one PUBLISH at a time, so batches keep their order on the bus.
        self._outgoing: list[bytes] = []
        self._outgoing_sent: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task | None = None
        self._publish_conn = None
        self._barriers: dict[str, asyncio.Future] = {}  # token -> resolved when it comes back

    def _log_key(self, namespace: str) -> str:
        return f"{self.prefix}:log:{namespace}"

    async def start(self, handler: Handler) -> None:
        self._task = asyncio.create_task(self._listen(handler), name="redis-bus-listener")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)
        except asyncio.TimeoutError:
            log.error("Redis bus not reachable at start; will keep retrying")

    async def publish(self, message: dict) -> None:
        await self.publish_soon(message)

    def publish_soon(self, message: dict) -> Awaitable[None]:
        """Queue the message for the next batch, which the publisher task sends
        before anything scheduled after this call (such as the flush of a local
        broadcast); the result resolves once that batch is published.

        Why batches: one PUBLISH through redis-py's client costs ~100 us of CPU
        (pool, retry, parsing), about as much as writing an event to 12 sockets;
        under load many messages share one, and the receiving instance handles
        them in one go, so its broadcasts share their socket writes too."""
        data = msgpack.packb(message)  # refuses what msgpack cannot encode, here
        if self._closing:
            raise BrokerUnavailable("the broker is stopped")
        sent = self._outgoing_sent
        if sent is None:
            sent = self._outgoing_sent = asyncio.get_running_loop().create_future()
            sent.add_done_callback(_retrieve)
            if self._publisher is None or self._publisher.done():
                self._publisher = asyncio.create_task(self._publish_forever(), name="redis-bus-publisher")
            self._wake.set()
        self._outgoing.append(data)
        # Shielded: a cancelled publisher must not cancel the batch for the others.
        outcome = asyncio.shield(sent)
        outcome.add_done_callback(_retrieve)
        return outcome

    async def _publish_forever(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            batch, sent = self._outgoing, self._outgoing_sent
            self._outgoing, self._outgoing_sent = [], None
            if sent is None:
                continue
            try:
                await self._publish_batch(batch)
            except asyncio.CancelledError:
                sent.set_exception(BrokerUnavailable("the broker is stopped"))
                raise
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                sent.set_exception(BrokerUnavailable(str(exc) or type(exc).__name__))
            except Exception as exc:
                # Never leave publishers waiting, nor this task dead with a batch due.
                log.exception("publishing on the bus failed")
                sent.set_exception(BrokerUnavailable(str(exc) or type(exc).__name__))
            else:
                sent.set_result(None)

    async def _publish_batch(self, batch: list[bytes]) -> None:
        """One PUBLISH on a connection of its own, without the client's per-command
        machinery. A lone message goes as it is; several as a "batch" header
        followed by the messages, which the receivers unpack in order."""
        if len(batch) == 1:
            payload = batch[0]
        else:
            payload = msgpack.packb({"t": "batch", "n": len(batch)}) + b"".join(batch)
        conn = self._publish_conn
        if conn is None:
            conn = self._publish_conn = self._own_connection()
        try:
            # A Redis that accepts the connection but never answers must not hold
            # the publishers forever.
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await conn.send_packed_command(conn.pack_command("PUBLISH", self.channel, payload),
                                               check_health=False)
                await conn.read_response()
        except BaseException:
            await conn.disconnect(nowait=True)  # the next batch connects afresh
            raise

    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        keys = ([self.channel, f"{self.prefix}:hold"] + [self._log_key(e["ns"]) for e in entries]
                + [f"{self.prefix}:logged:{e['id']}" for e in entries])
        mode = "hold" if hold else "relay" if relay else "direct"
        args = [int(self.retention * 1000), origin, mode, int(HOLD * 1000)] + [msgpack.packb(e) for e in entries]
        if time.monotonic() < self._append_down_until:
            raise BrokerUnavailable("Redis did not answer the previous append")
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                offsets = await self._append(keys=keys, args=args)
        except (RedisError, TimeoutError) as exc:
            self._append_down_until = time.monotonic() + RETRY_APPEND_AFTER
            raise BrokerUnavailable(str(exc) or "Redis did not answer an append in time") from exc
        if not isinstance(offsets, list):
            return None  # held
        return [(o.decode() if isinstance(o, bytes) else o) or None for o in offsets]

    async def since(self, namespace: str, offset: str, limit: int) -> list[tuple[str, dict]] | None:
        try:
            rows = await self.redis.xrange(self._log_key(namespace), min="(" + offset, max="+", count=limit + 1)
        except RedisError as exc:
            raise BrokerUnavailable(str(exc)) from exc
        if len(rows) > limit:
            return None
        return [(oid.decode(), msgpack.unpackb(fields[b"e"])) for oid, fields in rows]

    async def replay(self, namespace: str, offset: str, wanted: Callable[[dict], bool],
                     limit: int) -> Replay | None:
        """Reads the log in chunks up to its newest entry, keeping only the wanted:
        a replay costs a scan of the window, never more than `limit` entries held."""
        found, start = Replay([], None), offset
        while True:
            try:
                rows = await self.redis.xrange(self._log_key(namespace), min="(" + start, max="+",
                                               count=REPLAY_CHUNK)
            except RedisError as exc:
                raise BrokerUnavailable(str(exc)) from exc
            if not scan(((oid.decode(), msgpack.unpackb(fields[b"e"])) for oid, fields in rows),
                        wanted, found, limit):
                return None
            if len(rows) < REPLAY_CHUNK:
                return found
            start = found.head

    async def barrier(self, timeout: float) -> bool:
        """A message of this broker's own on the bus: Redis delivers what was
        published before it first, and the reader handles messages in order, so
        once it is back everything before it has been handled."""
        token = secrets.token_hex(8)
        arrived = asyncio.get_running_loop().create_future()
        self._barriers[token] = arrived
        try:
            async with asyncio.timeout(timeout):
                await self.publish({"t": "barrier", "b": token})
                await arrived
            return True
        except (BrokerUnavailable, TimeoutError):
            return False
        finally:
            self._barriers.pop(token, None)

    async def stop(self) -> None:
        if self._closing:
            return
        # redis-py can swallow a cancellation that lands inside get_message(), so
        # the loop also checks this flag.
        self._closing = True
        for task in (self._task, self._publisher):
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._outgoing_sent is not None:
            self._outgoing_sent.set_exception(BrokerUnavailable("the broker is stopped"))
        if self._publish_conn is not None:
            await self._publish_conn.disconnect(nowait=True)
        await self.redis.aclose()

    async def _handle(self, handler: Handler, message: dict) -> None:
        if message.get("t") == "barrier":  # another instance's, or one of ours (see `barrier`)
            arrived = self._barriers.get(message.get("b"))
            if arrived is not None and not arrived.done():
                arrived.set_result(None)
            return
        if message.get("t") == "log":
            last = self._last_offsets
            for entry, offset in zip(message["e"], message["x"]):
                had = last.get(entry["ns"])
                if had is None or offset_key(offset) > offset_key(had):
                    last[entry["ns"]] = offset
        try:
            await handler(message)
        except Exception:
            log.exception("bus message handler failed")

    async def _catch_up(self, handler: Handler) -> None:
        """Pub/sub drops what is published while a subscriber is away, so after a
        resubscription read each log from the last offset delivered from it (a log
        with none delivered yet: from a little before the loss, or the millisecond
        of the newest offset delivered from any, whichever is older) and deliver
        what was appended meanwhile. The receiver drops what it already had, by
        event id."""
        since_ms = int((self._lost_at - 5) * 1000)
        if self._last_offsets:
            since_ms = min(since_ms, max(offset_key(o) for o in self._last_offsets.values())[0])
        logs = f"{self.prefix}:log:"
        found: list[tuple[str, dict]] = []
        async for key in self.redis.scan_iter(match=logs + "*", count=100):
            last = self._last_offsets.get(key.decode()[len(logs):])
            start = "(" + last if last else f"{since_ms}-0"
            for oid, fields in await self.redis.xrange(key, min=start, max="+"):
                found.append((oid.decode(), msgpack.unpackb(fields[b"e"])))
        found.sort(key=lambda item: offset_key(item[0]))
        if found:
            log.warning("caught up %d events logged while the bus was unreachable", len(found))
            await self._handle(handler, {"t": "log", "o": None, "e": [e for _, e in found],
                                         "x": [o for o, _ in found]})

    @staticmethod
    def _decode(raw: bytes) -> list[dict]:
        """The messages of one PUBLISH, in order: a message, a batch of them, or a
        log header with its entries."""
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(raw)
        message = next(unpacker)
        kind = message.get("t")
        if kind == "batch":
            return list(unpacker)
        if kind == "log":
            message["e"] = list(unpacker)  # the entries follow the header
        return [message]

    def _own_connection(self):
        """A connection outside the client's pool, with the pool's settings (host,
        TLS, password...), RESP2 (one shape of replies in subscribed mode) and no
        per-command socket timeout: redis-py runs every command with one as a task
        of its own; the callers here bound the whole exchange instead."""
        pool = self.redis.connection_pool
        # redis-py 8's maintenance notifications need RESP3: not for these two.
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if not k.startswith("maint_notifications")}
        return pool.connection_class(**{**kwargs, "protocol": 2, "socket_timeout": None})

    async def _listen(self, handler: Handler) -> None:
        """Never dies silently: on any error it logs, backs off and resubscribes."""
        backoff, lost = 0.1, False
        while not self._closing:
            conn = pubsub = None
            try:
                if self.lean_reader:
                    conn = self._own_connection()
                    reader, early = await self._subscribe(conn)
                else:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self.channel)
                self.healthy = True
                self._subscribed.set()
                if lost:
                    log.warning("Redis is back: resubscribed to %s", self.channel)
                    await self._catch_up(handler)
                else:
                    log.info("subscribed to %s", self.channel)
                backoff, lost = 0.1, False
                if conn is not None:
                    await self._read(conn, reader, early, handler)
                else:
                    await self._read_pubsub(pubsub, handler)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not lost:
                    log.error("lost the Redis bus (%s); resubscribing", exc)
                    self._lost_at = time.time()
                    self.losses += 1
                self.healthy, lost = False, True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    if conn is not None:
                        await conn.disconnect(nowait=True)
                    if pubsub is not None:
                        await pubsub.aclose()
                except Exception:
                    pass

    async def _subscribe(self, conn) -> tuple[asyncio.StreamReader, bytes]:
        """Connect (redis-py does the handshake), subscribe, and wait for Redis to
        confirm; returns the connection's stream, which `_read` reads from then on,
        and what came right behind the confirmation."""
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            await conn.connect()
            reader = getattr(conn, "_reader", None)
            if not isinstance(reader, asyncio.StreamReader):
                # redis-py's internals changed: use its pub/sub reader from now on.
                log.warning("redis-py's connection has no stream reader; using its pub/sub reader")
                self.lean_reader = False
                raise RedisConnectionError("no stream reader on the connection")
            await conn.send_command("SUBSCRIBE", self.channel, check_health=False)
            buf = bytearray()
            while True:
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    raise RedisConnectionError("Redis closed the bus connection")
                buf += chunk
                parsed = resp_parse(buf, 0)
                if parsed is not None:
                    reply, end = parsed
                    if isinstance(reply, ResponseError):
                        raise reply
                    if not (isinstance(reply, list) and reply and reply[0] == b"subscribe"):
                        raise RedisConnectionError(f"unexpected answer to SUBSCRIBE: {reply!r}")
                    return reader, bytes(buf[end:])

    async def _read(self, conn, reader: asyncio.StreamReader, early: bytes, handler: Handler) -> None:
        """The lean reader: one read takes whatever Redis has sent, and every
        complete message in it is handled in order before the next read, without
        redis-py's per-message machinery (a timeout, several awaits and a dict per
        message). While idle, a PING every IDLE_PING seconds notices a dead
        connection; silence after one is a lost connection."""
        buf = bytearray(early)
        pinged = False
        while not self._closing:
            pos = 0
            while (parsed := resp_parse(buf, pos)) is not None:
                reply, pos = parsed
                if type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                    for message in self._decode(reply[2]):
                        await self._handle(handler, message)
                elif isinstance(reply, ResponseError):
                    raise reply
                # Else: the pong of an idle PING, or a (un)subscribe confirmation.
            del buf[:pos]
            try:
                async with asyncio.timeout(IDLE_PING):
                    chunk = await reader.read(READ_SIZE)
            except TimeoutError:
                if pinged:
                    raise RedisConnectionError("Redis did not answer a PING on the bus connection") from None
                await conn.send_command("PING", check_health=False)
                pinged = True
                continue
            if not chunk:
                raise RedisConnectionError("Redis closed the bus connection")
            pinged = False
            buf += chunk

    async def _read_pubsub(self, pubsub, handler: Handler) -> None:
        """redis-py's own pub/sub reader: used only if the lean one cannot be."""
        while not self._closing:
            msg = await pubsub.get_message(timeout=IDLE_PING)
            if msg is None:
                await pubsub.ping()  # notice a dead connection while idle
                continue
            if msg["type"] != "message":
                continue
            for message in self._decode(msg["data"]):
                await self._handle(handler, message)


def resp_parse(buf: bytearray, pos: int):
    """One RESP2 reply from `buf` at `pos`: (value, position after it), or None if
    it is not all there yet. Bulk strings come back as bytes, errors as
    ResponseError values (not raised)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line, after = buf[pos], buf[pos + 1:end], end + 2
    if kind == 0x24:  # $: bulk string
        n = int(line)
        if n < 0:
            return None, after
        if len(buf) < after + n + 2:
            return None
        return bytes(buf[after:after + n]), after + n + 2
    if kind == 0x2A:  # *: array
        items = []
        for _ in range(int(line)):
            parsed = resp_parse(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    if kind == 0x3A:  # :: integer
        return int(line), after
    if kind == 0x2B:  # +: simple string
        return bytes(line), after
    if kind == 0x2D:  # -: error
        return ResponseError(line.decode("utf-8", "replace")), after
    raise RedisConnectionError(f"unexpected data from Redis: {bytes(buf[pos:pos + 20])!r}")
