"""The one Socket.IO adapter: connect auth, event -> operation -> ack envelope.

No per-operation code lives here; every namespace of the registry is served by an
instance of `OperationNamespace`."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from urllib.parse import parse_qs

import msgpack
import socketio
from pydantic import ValidationError

from handlers.context import Actor, Context
from handlers.errors import (Forbidden, HubError, PayloadTooLarge, RateLimited, ValidationFailed,
                             unexpected, validation_details)
from handlers.registry import NamespaceSpec, Operation
from handlers.session import EXPIRED, REFRESH, AuthExpired
from hub.adapters.services import SocketServices
from hub.backends.limits import spend_operation
from hub.delivery.records import Replayed
from hub.delivery.recovery import identity

log = logging.getLogger("hub.namespaces")


async def answer(result: Awaitable, where: str) -> tuple[dict, str]:
    """An operation's ack envelope and its outcome for the metrics: `{ok: true, data}`,
    or the contract's error; an unexpected failure is logged (never sent) as
    `internal_error`, or `unavailable` when a dependency is down."""
    try:
        return {"ok": True, "data": await result}, "ok"
    except HubError as exc:
        return {"ok": False, "error": exc.body()}, exc.code
    except Exception as failure:
        error = unexpected(failure, log, where)
        return {"ok": False, "error": error.body()}, error.code


class TokenBucket:
    """Per-connection event budget: `rate` events a second, bursts up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until the next event fits in the budget."""
        return max(1 - self.tokens, 0) / self.rate


@dataclass
class Conn:
    actor: Actor
    bucket: TokenBucket
    expiry: asyncio.TimerHandle | None = None  # ends the connection when its token expires


def _token_from(environ: dict, auth) -> str | None:
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        return auth["token"]
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def payload_size(payload) -> int:
    try:
        return len(msgpack.packb(payload, default=str))
    except (TypeError, ValueError, OverflowError):
        return 0


class SocketServer(Protocol):
    """What the namespace asks of the Socket.IO server it is registered on (the hub's
    subclass, hub/adapters/socketio_server.py) beyond python-socketio's public API."""

    def wants_ack(self) -> bool:
        """Whether the event being handled was sent with an ack id."""

    def offer_pid(self, namespace: str, sid: str, pid: str) -> None:
        """Send `pid` in the CONNECT reply of this socket."""

    def settle_held(self, sid: str, namespace: str, replayed: set[str], head: str | None) -> None: ...

    async def drop_connection(self, sid: str, namespace: str) -> None: ...


class OperationNamespace(socketio.AsyncNamespace):
    json_replies = True  # every reply is JSON data: hub.transport.HubServer acks it as such
    server: SocketServer  # set by python-socketio's register_namespace

    def __init__(self, spec: NamespaceSpec, operations: dict[str, Operation], hub: SocketServices) -> None:
        super().__init__(spec.name)
        self.spec = spec
        self.ops = operations
        self.hub = hub
        self.conns: dict[str, Conn] = {}
        self._expiring: set[asyncio.Task] = set()

    def context(self, actor: Actor, sid: str | None) -> Context:
        return self.hub.context(actor, sid)

    async def trigger_event(self, event, *args):
        if event == "connect":
            sid, environ, auth = (list(args) + [None])[:3]
            return await self.connect(sid, environ, auth)
        if event == "disconnect":
            return await self.disconnect_socket(*args[:2])
        sid, *data = args
        return await self.handle(sid, event, data)

    async def connect(self, sid: str, environ: dict, auth) -> None:
        hub = self.hub
        try:
            actor = await hub.auth.actor(_token_from(environ, auth))
        except HubError as exc:
            raise self._refused(exc)
        if actor.acts_as not in self.spec.roles:
            raise self._refused(Forbidden(f"{actor.acts_as} tokens cannot connect to {self.spec.name}"))
        settings = hub.settings
        self.conns[sid] = Conn(actor, TokenBucket(settings.event_rate, settings.event_burst))
        hub.connections.add(actor.jti, self.spec.name, sid)
        rooms = self.spec.rooms_on_connect(actor)
        recovery = hub.recovery
        for room in rooms:
            await self.enter_room(sid, room)
        found = await recovery.lookup(self.spec.name, auth, actor)
        rejoined: list[str] = []

        async def enter(old_rooms: list[str]) -> None:
            rejoined.extend(await self._rejoinable(actor, [r for r in old_rooms if r not in rooms]))
            for room in rejoined:
                await self.enter_room(sid, room)

        replay = (await recovery.resume(self.spec.name, found.record.rooms, found.record.sid, found.offset, enter,
                                        sid=sid) if found else None)
        if replay is None:
            for room in rejoined:  # not recovered: a new session has only its own rooms
                await self.leave_room(sid, room)
            found = None
        else:
            rooms = rooms + rejoined
        hub.metrics.child(hub.metrics.connections, self.spec.name).inc()
        pid = (found.pid if found else recovery.new_pid()) if recovery.enabled else None
        try:
            if pid:
                await recovery.track(self.spec.name, sid, pid, actor, rooms, start=found.record.start if found else None)
            if replay is not None:
                await self._replay(sid, replay)
            if self.spec.on_connect:
                ctx = self.context(actor, sid)
                await self.spec.on_connect(ctx)
                await hub.fanout.deliver(ctx.events)
        except Exception as failure:
            # A refused connect gets no disconnect event: undo what it set up here.
            exc = unexpected(failure, log, f"connect to {self.spec.name}")
            await self.disconnect_socket(sid, "client disconnect")
            raise self._refused(exc) from None
        if pid:
            self.server.offer_pid(self.spec.name, sid, pid)  # goes out in the CONNECT reply
        self._arm(sid, self.conns[sid])

    def _refused(self, exc: HubError) -> socketio.exceptions.ConnectionRefusedError:
        """A refused connect: one log line and a count by reason; the client gets the error."""
        log.info("connection to %s refused: %s (%s)", self.spec.name, exc.code, exc.message,
                 extra={"namespace": self.spec.name, "reason": exc.code})
        self.hub.metrics.child(self.hub.metrics.refusals, self.spec.name, exc.code).inc()
        return socketio.exceptions.ConnectionRefusedError(exc.message, exc.body())

    async def _replay(self, sid: str, replay: Replayed) -> None:
        """Send a recovering socket what its rooms got while it was away (a room it
        may no longer be in included: e.g. the deletion of a post it watched). Sent
        after the CONNECT, with the live events that came meanwhile (the server holds
        both until then), in offset order, once each (`Recovery.resume`)."""
        for offset, event in replay.entries:
            await self.emit(event.event, (event.data, offset), to=sid)
        self.server.settle_held(sid, self.spec.name, {offset for offset, _ in replay.entries}, replay.head)

    async def _rejoinable(self, actor: Actor, rooms: list[str]) -> list[str]:
        """The rooms, among those a recovering socket had joined through operations,
        that the actor may still be in."""
        check = self.spec.may_rejoin
        if not check:
            return []
        ctx = self.context(actor, None)
        return [room for room in rooms if await check(ctx, room)]

    async def disconnect_socket(self, sid: str, reason: str | None = None) -> None:
        conn = self.conns.pop(sid, None)
        if conn is None:
            return
        if conn.expiry:
            conn.expiry.cancel()
        # Kept for recovery unless someone ended the session on purpose.
        await self.hub.recovery.gone(self.spec.name, sid,
                                     keep=reason not in ("client disconnect", "server disconnect"))
        self.hub.connections.remove(conn.actor.jti, self.spec.name, sid)
        self.hub.metrics.child(self.hub.metrics.connections, self.spec.name).dec()
        if self.spec.on_disconnect:
            ctx = self.context(conn.actor, sid)
            try:
                await self.spec.on_disconnect(ctx)
                await self.hub.fanout.deliver(ctx.events)
            except Exception:
                log.exception("disconnect hook of %s failed", self.spec.name)

    async def handle(self, sid: str, event: str, args: list) -> dict:
        wants_ack = self.server.wants_ack()
        op = self.ops.get(event)
        label = event if op else "unknown"
        started = time.perf_counter()
        reply, outcome = await answer(self._run(sid, event, op, args), f"operation {self.spec.name} {event}")
        metrics = self.hub.metrics
        metrics.child(metrics.events, self.spec.name, label, outcome).inc()
        if op:
            metrics.child(metrics.latency, self.spec.name, label).observe(time.perf_counter() - started)
        if not reply["ok"] and not wants_ack:
            await self.emit("error", {**reply["error"], "event": event}, to=sid)
        return reply

    async def _run(self, sid: str, event: str, op: Operation | None, args: list):
        conn = self.conns.get(sid)
        if conn is None:
            raise Forbidden("not connected")
        if not conn.bucket.take():
            raise RateLimited("too many events on this connection: slow down", retry_after=conn.bucket.wait())
        spend_operation(self.hub.limits, self.hub.settings, conn.actor)
        if op is None:
            raise ValidationFailed(f"unknown event {event!r} in {self.spec.name}")
        if op.roles is not None and conn.actor.acts_as not in op.roles:
            raise Forbidden(f"{conn.actor.acts_as} may not {event}")
        if len(args) > 1:
            raise ValidationFailed("send one object as the event's payload")
        payload = args[0] if args else {}
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationFailed("the payload must be an object")
        if payload_size(payload) > self.hub.settings.max_payload_bytes:
            raise PayloadTooLarge(f"payload larger than {self.hub.settings.max_payload_bytes} bytes")
        try:
            request = op.input.model_validate(payload)
        except ValidationError as exc:
            raise ValidationFailed("invalid input", details=validation_details(exc)) from None
        if event == REFRESH:
            return await self._refresh(sid, conn, request)
        ctx = self.context(conn.actor, sid)
        ctx.enter = partial(self.enter_room, sid)
        result = await op.func(ctx, request)
        data = op.output.dump_python(result, mode="json")
        for room in ctx.leaves:
            await self.leave_room(sid, room)
        for room in ctx.joins:
            await self.enter_room(sid, room)
        if ctx.joins or ctx.leaves:
            await self.hub.recovery.rooms_changed(self.spec.name, sid, ctx.joins, ctx.leaves)
        await self.hub.fanout.deliver(ctx.events)
        return data

    # --- the connection's token: in-band refresh, and the end at its expiry ----------

    async def _refresh(self, sid: str, conn: Conn, request) -> dict:
        """`auth:refresh`: the connection goes on under a fresh token of the same
        identity (checked like a connect's: signature, expiry, revocation)."""
        actor = await self.hub.auth.actor(request.token)
        if identity(actor) != identity(conn.actor):
            raise Forbidden("the new token belongs to someone else")
        # The old token's revocation no longer ends this socket; the new one's does.
        self.hub.connections.remove(conn.actor.jti, self.spec.name, sid)
        self.hub.connections.add(actor.jti, self.spec.name, sid)
        conn.actor = actor
        self._arm(sid, conn)
        return {"expires_at": actor.expires_at}

    def _arm(self, sid: str, conn: Conn) -> None:
        if conn.expiry:
            conn.expiry.cancel()
        if conn.actor.expires_at is None:
            return
        delay = max(conn.actor.expires_at - time.time(), 0)
        conn.expiry = asyncio.get_running_loop().call_later(delay, self._expire_soon, sid, conn)

    def _expire_soon(self, sid: str, conn: Conn) -> None:
        task = asyncio.create_task(self._expire(sid, conn))
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, sid: str, conn: Conn) -> None:
        """Tell the socket its token expired, then close its connection the way a
        network drop does: the official client reconnects by itself, asking its
        `auth` callback for a token again, and recovers what it missed meanwhile."""
        if self.conns.get(sid) is not conn:
            return
        try:
            await self.emit(EXPIRED, AuthExpired().model_dump(mode="json"), to=sid)
            await self.server.drop_connection(sid, self.spec.name)
        except Exception:
            log.exception("could not end the expired connection %s of %s", sid, self.spec.name)
