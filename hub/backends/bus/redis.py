"""The bus and log on Redis (base.py says what they do): pub/sub for the bus, a
stream per namespace for the log, appended to and published by one Lua script
(scripts.py) so offsets and bus order agree on every instance.

Commands go through the instance's shared client (hub/backends/redis.py). The bus
reads from a subscribed connection of its own with a lean reader (resp.py), and
publishes on another of its own, both made with the shared pool's settings.

Routed (the default), an instance reads the common channel and the channel of
each room it has a socket in (channels.py), so it decodes only what its sockets
need; `per_room=False` puts every message on the common channel, as before.

On a Redis Cluster (the shared client a RedisCluster) the channels are sharded
(SSUBSCRIBE / SPUBLISH, Redis 7): the bus's two connections go to the master owning
the bus's slot, and every key and channel of the bus (the logs, the hold and
"logged" markers) carries the common channel's hash tag, so an append (one script
over several logs) and its publishes run on that one node. After a lost connection (a failover) they reread the
slots and go to the new owner; the catch-up covers what was published meanwhile."""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from engine import cancel_and_wait
from hub.backends.bus import codec
from hub.backends.bus.base import HOLD, Broker, BrokerUnavailable, Handler, Replay, Route, offset_key, scan
from hub.backends.bus.channels import Channels
from hub.backends.bus.resp import resp_parse
from hub.backends.bus.scripts import append_script
from hub.backends.redis import OnRedis, is_cluster, tagged

log = logging.getLogger("hub.broker")

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
# Entries read per XRANGE while a replay or a catch-up scans the log.
REPLAY_CHUNK = 1000


def _retrieve(future: asyncio.Future) -> None:
    """Mark a batch's failure as seen: its publishers may all have been cancelled."""
    if not future.cancelled():
        future.exception()


class RedisBroker(OnRedis, Broker):
    # Read the bus with the lean reader (`_read`); False: redis-py's PubSub.
    lean_reader = True

    def __init__(self, redis: aioredis.Redis, prefix: str, retention: float = 150.0, *,
                 per_room: bool = True) -> None:
        """`redis`: the instance's shared client, which the caller closes.
        `per_room`: route messages to the channels of their rooms."""
        super().__init__(retention)
        self.routed = per_room
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
        self._subscribe_cmd, self._message_kind = (("SSUBSCRIBE", b"smessage") if self.sharded
                                                   else ("SUBSCRIBE", b"message"))
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

    def _log_key(self, namespace: str) -> str:
        return f"{self.channel}:log:{namespace}"

    # --- the room channels this instance reads ------------------------------------------

    def subscribe(self, namespace: str, room: str) -> None:
        if self.routed and self.channels.want(self.channels.of_room(namespace, room)):
            self._change_soon()

    def unsubscribe(self, namespace: str, room: str) -> None:
        if self.routed:
            self.channels.drop(self.channels.of_room(namespace, room))
            self._change_soon()

    async def subscribed(self, namespace: str, room: str) -> None:
        confirmed = self.channels.wanted.get(self.channels.of_room(namespace, room)) if self.routed else None
        if confirmed is None or confirmed.done() or not self.healthy:
            return
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await asyncio.shield(confirmed)
        except TimeoutError:
            log.warning("Redis did not confirm the subscription to %s's room %s in time", namespace, room)

    def _change_soon(self) -> None:
        """Send the pending (UN)SUBSCRIBEs once this loop iteration's joins and
        leaves are in: a burst of connects shares one command."""
        if self._changing is None or self._changing.done():
            self._changing = asyncio.create_task(self._send_changes(), name="redis-bus-channels")

    async def _send_changes(self) -> None:
        await asyncio.sleep(0)
        conn = self._listening
        if conn is None:
            return  # sent on the next connection, with every wanted channel
        try:
            for command, channels in self.channels.take_pending():
                await conn.send_command(command, *channels, check_health=False)
        except (RedisError, OSError) as exc:
            # The reader notices the lost connection too, and resubscribes everything.
            log.warning("could not change the bus's channels: %s", exc)

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

    async def _handle(self, handler: Handler, message: dict) -> None:
        token = message.get("u")
        if token is not None and not self.channels.first_copy(token):
            return
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
        resubscription read each log from where this instance stopped reading it
        and deliver what was appended meanwhile: from the last offset delivered
        from it, or from a little before the loss (in Redis's clock) when that is
        later. Not from an older offset: a routed instance hears nothing of the
        rooms it has no socket in, so its last offset in a log can be long past,
        and a room joined since must not get what came before the join. The
        receiver drops what it already had, by event id."""
        seconds, micros = await self.redis.time()
        since_ms = int((self._lost_at + (seconds + micros / 1e6 - time.time()) - 5) * 1000)
        logs = self._log_key("")
        found: list[tuple[str, dict]] = []
        # On a cluster: the logs are all on the channel's node, which alone is scanned.
        where = {"target_nodes": self.redis.get_node_from_key(self.channel)} if self.sharded else {}
        async for key in self.redis.scan_iter(match=logs + "*", count=100, **where):
            last = self._last_offsets.get(key.decode()[len(logs):])
            bound = "(" + last if last and offset_key(last)[0] >= since_ms else f"{since_ms}-0"
            while True:  # in chunks: each read well within the client's command timeout
                rows = await self.redis.xrange(key, min=bound, max="+", count=REPLAY_CHUNK)
                found += [(oid.decode(), codec.unpack(fields[b"e"])) for oid, fields in rows]
                if len(rows) < REPLAY_CHUNK:
                    break
                bound = "(" + rows[-1][0].decode()
        found.sort(key=lambda item: offset_key(item[0]))
        if found:
            log.warning("caught up %d events logged while the bus was unreachable", len(found))
            await self._handle(handler, {"t": "log", "o": None, "e": [e for _, e in found],
                                         "x": [o for o, _ in found]})

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

    async def _listen(self, handler: Handler) -> None:
        """Never dies silently: on any error it logs, backs off and resubscribes."""
        backoff, lost = 0.1, False
        while not self._closing:
            conn = pubsub = None
            try:
                if lost:
                    self._slots_stale = True
                if self.lean_reader:
                    conn = await self._own_connection()
                    reader, early = await self._subscribe(conn)
                else:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    self._listening = _PubSubChanges(pubsub, self.channels)
                    for command, channels in self.channels.all_commands():
                        await self._listening.send_command(command, *channels)
                self._change_soon()  # what was asked for while this connected
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
                self._listening = None
                self.channels.lost()
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
            commands = self.channels.all_commands()  # the common channel first
            for command, channels in commands:
                await conn.send_command(command, *channels, check_health=False)
            self._listening = conn
            buf = bytearray()
            while True:
                chunk = await reader.read(READ_SIZE)
                if not chunk:
                    raise RedisConnectionError("Redis closed the bus connection")
                self.received_bytes += len(chunk)
                buf += chunk
                parsed = resp_parse(buf, 0)
                if parsed is not None:
                    reply, end = parsed
                    if isinstance(reply, ResponseError):
                        raise reply
                    if not (isinstance(reply, list) and reply and reply[0] == self._subscribe_cmd.lower().encode()):
                        raise RedisConnectionError(f"unexpected answer to {self._subscribe_cmd}: {reply!r}")
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
                if type(reply) is list and len(reply) == 3 and reply[0] == self._message_kind:
                    for message in codec.decode(reply[2]):
                        await self._handle(handler, message)
                elif isinstance(reply, ResponseError):
                    raise reply
                elif type(reply) is list and len(reply) == 3:
                    self._confirmation(reply[0], reply[1].decode())
                # Else: the pong of an idle PING.
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
            self.received_bytes += len(chunk)
            buf += chunk

    def _confirmation(self, kind: bytes, channel: str) -> None:
        if kind in (b"subscribe", b"ssubscribe"):
            self.channels.confirmed(channel)
        elif kind in (b"unsubscribe", b"sunsubscribe") and not self.channels.left(channel) and self.sharded:
            # The cluster moved the bus's slot (a failover, a reshard) and
            # unsubscribed us: subscribe again where it is now, and catch up.
            raise RedisConnectionError("the cluster moved the bus channel's slot")

    async def _read_pubsub(self, pubsub, handler: Handler) -> None:
        """redis-py's own pub/sub reader: used only if the lean one cannot be."""
        while not self._closing:
            msg = await pubsub.get_message(timeout=IDLE_PING)
            if msg is None:
                await pubsub.ping()  # notice a dead connection while idle
                continue
            if msg["type"] in ("unsubscribe", "sunsubscribe"):
                self._confirmation(msg["type"].encode(), msg["channel"].decode())
            if msg["type"] not in ("message", "smessage"):
                continue
            for message in codec.decode(msg["data"]):
                await self._handle(handler, message)


class _PubSubChanges:
    """Channel changes through redis-py's PubSub (the fallback reader), which hides
    subscribe confirmations: a subscription counts as confirmed once sent."""

    def __init__(self, pubsub, channels: Channels) -> None:
        self.pubsub, self.channels = pubsub, channels

    async def send_command(self, command: str, *channels: str, check_health: bool = False) -> None:
        await getattr(self.pubsub, command.lower())(*channels)
        if not command.endswith("UNSUBSCRIBE"):
            for channel in channels:
                self.channels.confirmed(channel)
