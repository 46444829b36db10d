"""One plain connection (WebSocket or SSE) in the hub: its actor, the namespaces it
is attached to, its rooms, recovery records and request budget. What the Socket.IO
adapter (hub/adapters/socketio.py) does for a socket, for a `Member`."""
from __future__ import annotations

import logging
import secrets
import time

from pydantic import ValidationError

from handlers.context import Actor
from handlers.errors import Forbidden, PayloadTooLarge, RateLimited, ValidationFailed, validation_details
from handlers.registry import REGISTRY
from hub.adapters.gateways.members import Member
from hub.adapters.socketio import TokenBucket, answer, payload_size
from hub.backends.limits import spend_operation
from hub.delivery.records import Replayed

log = logging.getLogger("hub.gateways")


def new_sid() -> str:
    # Never a Socket.IO sid (those have no prefix): a skip_sid names one or the other.
    return "p" + secrets.token_urlsafe(15)


class Connection:
    def __init__(self, hub, actor: Actor, member: Member) -> None:
        self.hub, self.actor, self.member = hub, actor, member
        settings = hub.settings
        self.bucket = TokenBucket(settings.event_rate, settings.event_burst)
        self.namespaces: list[str] = []
        hub.fanout.members.add(member)

    @property
    def members(self):
        return self.hub.fanout.members

    async def attach(self, namespace: str, *, session: str | None = None, offset: str | None = None,
                     resuming: bool = False) -> Replayed | None:
        """Join the namespace's connect rooms, as a Socket.IO socket would. With a
        `session`, record it for recovery; `resuming` it (the member holds live
        frames: `Member.hold`), its rooms come back and the events it missed are
        returned, read as `Recovery.resume` does (None: nothing to resume; the client
        re-reads with `sync`)."""
        hub, actor = self.hub, self.actor
        spec = REGISTRY.namespaces.get(namespace)
        if spec is None:
            raise ValidationFailed(f"no namespace {namespace!r}")
        if actor.acts_as not in spec.roles:
            raise Forbidden(f"{actor.acts_as} tokens cannot connect to {namespace}")
        rooms = spec.rooms_on_connect(actor)
        for room in rooms:
            await self.members.enter(namespace, room, self.member)
        found = replay = None
        if resuming and session is not None:
            found = await hub.recovery.lookup(namespace, {"pid": session + namespace, "offset": offset}, actor)
        if found:
            rejoined: list[str] = []

            async def enter(old_rooms: list[str]) -> None:
                if spec.may_rejoin:
                    ctx = hub.context(actor, None)
                    rejoined.extend([r for r in old_rooms if r not in rooms and await spec.may_rejoin(ctx, r)])
                for room in rejoined:
                    await self.members.enter(namespace, room, self.member)

            replay = await hub.recovery.resume(namespace, found.record.rooms, found.record.sid, found.offset, enter,
                                               sid=self.member.sid)
            if replay is None:
                for room in rejoined:  # not recovered: a new session has only its own rooms
                    self.members.leave(namespace, room, self.member)
            else:
                rooms += rejoined
        self.namespaces.append(namespace)
        hub.connections.add(actor.jti, namespace, self.member.sid)
        hub.metrics.child(hub.metrics.connections, namespace).inc()
        if hub.recovery.enabled and session is not None:
            await hub.recovery.track(namespace, self.member.sid, session + namespace, actor, rooms,
                                     start=found.record.start if replay is not None else None)
        if spec.on_connect:
            ctx = hub.context(actor, self.member.sid)
            await spec.on_connect(ctx)
            await hub.fanout.deliver(ctx.events)
        return replay

    async def close(self) -> None:
        """Leave everything. Its recovery records stay for the window: a plain client
        that comes back resumes whether or not it closed on purpose."""
        hub, sid = self.hub, self.member.sid
        self.members.remove(self.member)
        for namespace in self.namespaces:
            await hub.recovery.gone(namespace, sid, keep=True)
            hub.connections.remove(self.actor.jti, namespace, sid)
            hub.metrics.child(hub.metrics.connections, namespace).dec()
            spec = REGISTRY.namespaces[namespace]
            if spec.on_disconnect:
                ctx = hub.context(self.actor, sid)
                try:
                    await spec.on_disconnect(ctx)
                    await hub.fanout.deliver(ctx.events)
                except Exception:
                    log.exception("disconnect hook of %s failed", namespace)
        self.namespaces = []

    async def request(self, namespace: str, event: str, payload, size: int | None = None) -> dict:
        """Run an operation for this connection: `{"ok": true, "data"}` or `{"ok": false,
        "error"}`, with the Socket.IO adapter's checks, limits and metrics."""
        metrics = self.hub.metrics
        op = REGISTRY.operations.get((namespace, event))
        op = op if op is not None and op.socket else None  # never an HTTP-only operation
        started = time.perf_counter()
        reply, outcome = await answer(self.run(namespace, event, payload, size, op), f"operation {namespace} {event}")
        label = event if op else "unknown"
        metrics.child(metrics.events, namespace if op else "plain", label, outcome).inc()
        if op:
            metrics.child(metrics.latency, namespace, label).observe(time.perf_counter() - started)
        return reply

    async def run(self, namespace: str, event: str, payload, size: int | None = None, op=None):
        """The operation's result, or its HubError."""
        op = op or REGISTRY.operations.get((namespace, event))
        if op is not None and not op.socket:
            op = None
        hub, actor = self.hub, self.actor
        if not self.bucket.take():
            raise RateLimited("too many events on this connection: slow down", retry_after=self.bucket.wait())
        spend_operation(hub.limits, hub.settings, actor)
        if op is None or namespace not in self.namespaces:
            raise ValidationFailed(f"unknown event {event!r} in {namespace!r}")
        if op.roles is not None and actor.acts_as not in op.roles:
            raise Forbidden(f"{actor.acts_as} may not {event}")
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise ValidationFailed("the payload must be an object")
        limit = hub.settings.max_payload_bytes
        if (size if size is not None else payload_size(payload)) > limit:
            raise PayloadTooLarge(f"payload larger than {limit} bytes")
        try:
            request = op.input.model_validate(payload)
        except ValidationError as exc:
            raise ValidationFailed("invalid input", details=validation_details(exc)) from None
        ctx = hub.context(actor, self.member.sid)
        result = await op.func(ctx, request)
        data = op.output.dump_python(result, mode="json")
        for room in ctx.leaves:
            self.members.leave(namespace, room, self.member)
        for room in ctx.joins:
            await self.members.enter(namespace, room, self.member)
        if ctx.joins or ctx.leaves:
            await hub.recovery.rooms_changed(namespace, self.member.sid, ctx.joins, ctx.leaves)
        await hub.fanout.deliver(ctx.events)
        return data
