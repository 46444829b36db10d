"""The reading half of the Redis bus (redis.py): the subscribed connection, the
room channels it reads (channels.py), and the catch-up from the log after a loss.

`RedisBroker` is made of this and its writing half; this part reads the state the
broker's constructor sets up (its client, channels, handler-side bookkeeping).
The bus is read from a connection of its own with a lean reader (resp.py):
whatever one read brings is handled in order before the next read."""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from hub.backends.bus import codec
from hub.backends.bus.base import Handler, offset_key
from hub.backends.bus.channels import Channels
from hub.backends.bus.resp import resp_parse

log = logging.getLogger("hub.broker")

SUBSCRIBE_TIMEOUT = 5.0
# An idle bus connection is PINGed this often (seconds); no answer by the next
# time means it is dead.
IDLE_PING = 1.0
READ_SIZE = 1 << 16
# Entries read per XRANGE while a replay or a catch-up scans the log.
REPLAY_CHUNK = 1000


class BusReader:
    """What RedisBroker does to read the bus (see the module docstring)."""

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
        logs = self._log_key("")
        found: list[tuple[str, dict]] = []
        # On a cluster: the logs are all on the channel's node, which alone is scanned.
        where = {"target_nodes": self.redis.get_node_from_key(self.channel)} if self.sharded else {}
        seconds, micros = await self.redis.time(**where)
        since_ms = int((self._lost_at + (seconds + micros / 1e6 - time.time()) - 5) * 1000)
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
                    sent = commands[0][0]  # the common channel's (S)SUBSCRIBE
                    if not (isinstance(reply, list) and reply and reply[0] == sent.lower().encode()):
                        raise RedisConnectionError(f"unexpected answer to {sent}: {reply!r}")
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
