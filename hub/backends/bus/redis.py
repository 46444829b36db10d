"""The bus and log on Redis (base.py says what they do): pub/sub for the bus, a
stream per namespace for the log, appended to and published by one Lua script
(scripts.py) so offsets and bus order agree on every instance.

Commands go through the instance's shared client (hub/backends/redis.py). The bus
reads from a subscribed connection of its own (reader.py: the reading half), and
publishes on another of its own, both made with the shared pool's settings.

Routed (the default), an instance reads the common channel and the channel of
each room it has a socket in (channels.py), so it decodes only what its sockets
need; `per_room=False` puts every message on the common channel, as before.

On a Redis Cluster (the shared client a RedisCluster) the channels are sharded
(SSUBSCRIBE / SPUBLISH, Redis 7): the bus's two connections go to the master owning
the bus's slot, and every key and channel of the bus (the logs, the hold and
"logged" markers) carries the common channel's hash tag, so an append (one script
over several logs) and its publishes run on that one node. After a lost connection
(a failover) they reread the slots and go to the new owner; the catch-up covers
what was published meanwhile."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine import cancel_and_wait
from hub.backends.bus import codec
from hub.backends.bus.base import HOLD, Broker, BrokerUnavailable, Handler, Replay, Route, scan
from hub.backends.bus.channels import Channels
from hub.backends.bus.reader import REPLAY_CHUNK, BusReader
from hub.backends.bus.scripts import append_script
from hub.backends.redis import OnRedis, is_cluster, tagged

log = logging.getLogger("hub.broker")

# Seconds a command (an append, a PUBLISH) may take before its callers are told the
# bus is unavailable: acks wait for appends, and what fails goes by the outbox relay.
COMMAND_TIMEOUT = 1.0
# After a failed append, appends fail at once for this long instead of each waiting
# for its own timeout on a link that just proved dead.
RETRY_APPEND_AFTER = 1.0


def _retrieve(future: asyncio.Future) -> None:
    """Mark a batch's failure as seen: its publishers may all have been cancelled."""
    if not future.cancelled():
        future.exception()


class RedisBroker(BusReader, OnRedis, Broker):
    # Read the bus with the lean reader (`_read`); False: redis-py's PubSub.
    lean_reader = True

    def __init__(self, redis: aioredis.Redis, prefix: str, retention: float = 150.0, *,
                 per_room: bool = True) -> None:
        """`redis`: the instance's shared client, which the caller closes.
        `per_room`: route messages to the channels of their rooms."""
        super().__init__(retention)
        self.redis = redis
        self._append_down_until = 0.0
        self.prefix = prefix
        # The channel's name is the bus's hash tag: every key below carries it.
        self.channel = tagged(prefix, "bus")
        self.sharded = is_cluster(redis)
        self.channels = Channels(self.channel, per_room, sharded=self.sharded)
        # The connection the bus is read from, once subscribed (room channels are
        # (un)subscribed on it), and the task sending those changes.
        self._listening = None
        self._changing: asyncio.Task | None = None
        self.received_bytes = 0  # read from Redis on the bus connection
        self._slots_stale = False  # a bus connection failed: reread who owns the slot
        self._message_kind = b"smessage" if self.sharded else b"message"
        self._publish_cmd = "SPUBLISH" if self.sharded else "PUBLISH"
        self.healthy = False
        self._append = self.redis.register_script(append_script(self._publish_cmd))
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
        self._outgoing: list[tuple[bytes, tuple[str, ...]]] = []  # (message, its channels)
        self._outgoing_sent: asyncio.Future | None = None
        self._wake = asyncio.Event()
        self._publisher: asyncio.Task | None = None
        self._publish_conn = None
        self._barriers: dict[str, asyncio.Future] = {}  # token -> resolved when it comes back

    @property
    def routed(self) -> bool:
        return self.channels.routed

    def _log_key(self, namespace: str) -> str:
        return f"{self.channel}:log:{namespace}"

    async def start(self, handler: Handler) -> None:
        self._task = asyncio.create_task(self._listen(handler), name="redis-bus-listener")
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)
        except asyncio.TimeoutError:
            log.error("Redis bus not reachable at start; will keep retrying")

    async def publish(self, message: dict, to: Route = None) -> None:
        await self.publish_soon(message, to)

    def publish_soon(self, message: dict, to: Route = None) -> Awaitable[None]:
        """Queue the message for the next batch, which the publisher task sends
        before anything scheduled after this call (such as the flush of a local
        broadcast); the result resolves once that batch is published.

        Why batches: one PUBLISH through redis-py's client costs ~100 us of CPU
        (pool, retry, parsing), about as much as writing an event to 12 sockets;
        under load many messages share one, and the receiving instance handles
        them in one go, so its broadcasts share their socket writes too."""
        channels = self.channels.of(to)
        if len(channels) > 1:  # an instance in several of its rooms handles it once
            message = {**message, "u": secrets.token_bytes(8)}
        data = codec.pack(message)  # refuses what msgpack cannot encode, here
        if self._closing:
            raise BrokerUnavailable("the broker is stopped")
        sent = self._outgoing_sent
        if sent is None:
            sent = self._outgoing_sent = asyncio.get_running_loop().create_future()
            sent.add_done_callback(_retrieve)
            if self._publisher is None or self._publisher.done():
                self._publisher = asyncio.create_task(self._publish_forever(), name="redis-bus-publisher")
            self._wake.set()
        self._outgoing.append((data, channels))
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

    async def _publish_batch(self, batch: list[tuple[bytes, tuple[str, ...]]]) -> None:
        """The batch's messages on a connection of its own, without the client's
        per-command machinery, in one write: each run of consecutive messages with
        the same channels as one PUBLISH to each (codec.pack_batch), in order."""
        runs: list[tuple[tuple[str, ...], list[bytes]]] = []
        for data, channels in batch:
            if runs and runs[-1][0] == channels:
                runs[-1][1].append(data)
            else:
                runs.append((channels, [data]))
        commands = [(self._publish_cmd, channel, payload)
                    for channels, messages in runs for payload in (codec.pack_batch(messages),)
                    for channel in channels]
        conn = self._publish_conn
        try:
            # A Redis that accepts the connection but never answers must not hold
            # the publishers forever.
            async with asyncio.timeout(COMMAND_TIMEOUT):
                if conn is None:
                    conn = self._publish_conn = await self._own_connection()
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                for _ in commands:
                    await conn.read_response()
        except BaseException:
            if conn is not None:
                await conn.disconnect(nowait=True)
            # The next batch connects afresh (on a cluster, to the slot's owner then).
            self._publish_conn = None
            self._slots_stale = True
            raise

    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        # Each entry's route (its channels), numbered, and each channel, numbered:
        # the script publishes the runs of entries with one route to its channels.
        numbered: dict[str, int] = {}
        routes: dict[tuple[str, ...], int] = {}
        route_of = []
        for entry in entries:
            channels = self.channels.of_entry(entry, self.to_all)
            if channels not in routes:
                routes[channels] = len(routes) + 1
                for channel in channels:
                    numbered.setdefault(channel, len(numbered) + 1)
            route_of.append(routes[channels])
        keys = ([f"{self.channel}:hold"] + [self._log_key(e["ns"]) for e in entries]
                + [f"{self.channel}:logged:{e['id']}" for e in entries] + list(numbered))
        mode = "hold" if hold else "relay" if relay else "direct"
        args = ([int(self.retention * 1000), origin, mode, int(HOLD * 1000), len(entries)]
                + [codec.pack(e) for e in entries] + route_of
                + [" ".join(str(numbered[c]) for c in channels) for channels in routes])
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
        return [(oid.decode(), codec.unpack(fields[b"e"])) for oid, fields in rows]

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
            if not scan(((oid.decode(), codec.unpack(fields[b"e"])) for oid, fields in rows),
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
        await cancel_and_wait(self._task, self._publisher)
        if self._outgoing_sent is not None:
            self._outgoing_sent.set_exception(BrokerUnavailable("the broker is stopped"))
        if self._publish_conn is not None:
            await self._publish_conn.disconnect(nowait=True)
        await self.release_client()

    async def _own_connection(self):
        """A connection outside the client's pool, with the pool's settings (host,
        TLS, password...), RESP2 (one shape of replies in subscribed mode) and no
        per-command socket timeout: redis-py runs every command with one as a task
        of its own; the callers here bound the whole exchange instead. On a
        cluster: to the master owning the channel's slot, as the client knows it."""
        if self.sharded:
            await self.redis.initialize()  # the slots, once (a no-op after)
            if self._slots_stale:
                await self._reread_slots()
            pool = self.redis.get_node_from_key(self.channel)
        else:
            pool = self.redis.connection_pool
        # redis-py 8's maintenance notifications need RESP3: not for these two.
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if not k.startswith("maint_notifications")}
        return pool.connection_class(**{**kwargs, "protocol": 2, "socket_timeout": None})

    async def _reread_slots(self) -> None:
        """After a lost bus connection on a cluster: ask the nodes still up who owns
        the channel's slot now (a replica promoted by a failover)."""
        if self.sharded:
            try:
                await self.redis.nodes_manager.initialize()
                self._slots_stale = False
            except Exception as exc:  # the next attempt asks again
                log.warning("could not reread the cluster's slots: %s", exc)
