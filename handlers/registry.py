"""The one registry of namespaces, operations and server events.

The Socket.IO adapter, the HTTP adapter and the AsyncAPI and OpenAPI documents
are all generated from it; none of them holds per-operation code.
"""
from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, NamedTuple

from pydantic import BaseModel, TypeAdapter

from handlers.context import EVERYONE, Actor, Context, user_room

Handler = Callable[[Context, BaseModel], Awaitable[Any]]


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    description: str
    roles: frozenset[str]
    # Rooms a socket joins on connect besides its personal room (e.g. "staff").
    connect_rooms: Callable[[Actor], list[str]] | None = None
    on_connect: Callable[[Context], Awaitable[None]] | None = None
    on_disconnect: Callable[[Context], Awaitable[None]] | None = None
    # Room name patterns a service may publish to, e.g. r"staff" or r"post:\d+".
    publish_rooms: tuple[str, ...] = ()
    # Whether a recovering socket may get back a room it had joined through an
    # operation (`@rejoin_check`); without one such rooms are not restored.
    may_rejoin: Callable[[Context, str], Awaitable[bool]] | None = None

    def room_allowed(self, room: str) -> bool:
        return any(re.fullmatch(p, room) for p in self.publish_rooms)

    def rooms_on_connect(self, actor: Actor) -> list[str]:
        """The rooms every connection of `actor` joins in this namespace, whatever
        its transport: its user's room, the namespace's everyone, and its own."""
        rooms = [user_room(actor.id)] if actor.id is not None else []
        rooms.append(EVERYONE)
        if self.connect_rooms:
            rooms += self.connect_rooms(actor)
        return rooms


JSON = "application/json"


class Http(NamedTuple):
    """How an operation is reached over HTTP. `(method, path)` is all most need."""

    method: str
    path: str
    status: int | None = None  # of a success; None: 201 for POST, else 200
    public: bool = False  # no token: the operation runs for an anonymous actor
    # (name, Settings attribute): requests a minute per client address, counted
    # before the body is read (e.g. logins).
    per_address: tuple[str, str] | None = None
    spend: bool = True  # counts against the actor's operation budget
    # Media types. Anything but JSON (a multipart upload, a file download) is served
    # by a thin route of its own, which calls the operation; described here for
    # the OpenAPI document all the same.
    request: str = JSON
    response: str = JSON

    @property
    def generic(self) -> bool:
        return self.request == JSON and self.response == JSON


@dataclass(frozen=True)
class Operation:
    namespace: str  # a Socket.IO namespace; for an HTTP-only operation, its group
    event: str
    func: Handler
    input: type[BaseModel]
    output: TypeAdapter
    roles: frozenset[str] | None  # None: every role the namespace admits (HTTP only: any actor)
    http: Http | None  # when also (or only) reachable over HTTP
    summary: str
    socket: bool = True  # False: HTTP only (accounts, uploads, publishing)


@dataclass(frozen=True)
class ServerEventSpec:
    namespace: str
    event: str
    model: type[BaseModel]
    publishable: bool  # services may send it through POST /api/publish
    summary: str
    # Fields naming the thing whose state the event carries (with a growing `version`):
    # a socket that has not taken the last one yet gets only the newest volatile one
    # (hub/delivery/coalescing.py). Empty: every event is sent.
    coalesce_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """A periodic background task, run by every instance (`hub.jobs`). A job that
    must happen once across instances claims its work in the database."""

    name: str
    func: Callable[[Context], Awaitable[None]]
    # Seconds between the end of one run and the start of the next, or a function
    # of the instance's Settings giving them (a configurable interval).
    every: float | Callable[[Any], float]

    def interval(self, settings) -> float:
        return float(self.every(settings) if callable(self.every) else self.every)


@dataclass
class Registry:
    namespaces: dict[str, NamespaceSpec] = field(default_factory=dict)
    operations: dict[tuple[str, str], Operation] = field(default_factory=dict)
    events: dict[tuple[str, str], ServerEventSpec] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    # Live resource types by name (handlers/resource_types.py), documented with the events.
    resource_types: dict[str, Any] = field(default_factory=dict)

    def operations_of(self, namespace: str) -> dict[str, Operation]:
        """The operations a socket of `namespace` may send (never the HTTP-only ones)."""
        return {op.event: op for (ns, _), op in self.operations.items() if ns == namespace and op.socket}

    def events_of(self, namespace: str) -> dict[str, ServerEventSpec]:
        return {ev.event: ev for (ns, _), ev in self.events.items() if ns == namespace}


REGISTRY = Registry()


def namespace(name: str, description: str, *, roles: set[str], **hooks: Any) -> NamespaceSpec:
    spec = NamespaceSpec(name=name, description=description, roles=frozenset(roles), **hooks)
    REGISTRY.namespaces[name] = spec
    return spec


def operation(
    namespace: str,
    event: str,
    *,
    roles: set[str] | None = None,
    http: tuple[str, str] | Http | None = None,
    socket: bool = True,
) -> Callable[[Handler], Handler]:
    """Register `async def op(ctx, req: InputModel) -> Output` as the handler of
    `event` in `namespace` (and of `http`, when given; only of it with
    `socket=False`, when `namespace` names the operation's group)."""
    if not socket and http is None:
        raise ValueError(f"operation {namespace} {event}: an HTTP-only operation needs its route")

    def register(func: Handler) -> Handler:
        hints = typing.get_type_hints(func)
        params = [p for p in func.__code__.co_varnames[: func.__code__.co_argcount] if p != "ctx"]
        input_model = hints[params[0]]
        key = (namespace, event)
        if key in REGISTRY.operations:
            raise RuntimeError(f"operation {namespace} {event} registered twice")
        REGISTRY.operations[key] = Operation(
            namespace=namespace,
            event=event,
            func=func,
            input=input_model,
            output=TypeAdapter(hints.get("return", Any)),
            roles=frozenset(roles) if roles else None,
            http=Http(*http) if http is not None else None,
            summary=(func.__doc__ or "").strip().split("\n")[0],
            socket=socket,
        )
        return func

    return register


def server_event(namespace: str, event: str, *, publishable: bool = False, coalesce_by: tuple[str, ...] = ()):
    """Class decorator: register a pydantic model as the schema of a server event.

    Instances are what handlers pass to `ctx.emit`; publishable events are also
    what services may send through `POST /api/publish`, validated by the model."""

    def register(model: type[BaseModel]) -> type[BaseModel]:
        spec = ServerEventSpec(
            namespace=namespace,
            event=event,
            model=model,
            publishable=publishable,
            summary=(model.__doc__ or "").strip().split("\n")[0],
            coalesce_by=coalesce_by,
        )
        REGISTRY.events[(namespace, event)] = spec
        model.__server_event__ = spec
        return model

    return register


def periodic(name: str, *, every: float | Callable[[Any], float]):
    """Register `async def job(ctx)` to run every `every` seconds on each instance
    (`every` may be a function of Settings, e.g. `lambda s: s.scheduler_interval`).
    Its ctx has the `system` actor; events it emits are delivered like an operation's."""

    def register(func):
        REGISTRY.jobs[name] = Job(name=name, func=func, every=every)
        return func

    return register


def rejoin_check(name: str):
    """Register `async def check(ctx, room) -> bool` for namespace `name`: asked, when
    a socket recovers its session, for each room it had joined through an operation
    (the actor's rights may have changed while it was away)."""

    def register(func):
        REGISTRY.namespaces[name] = replace(REGISTRY.namespaces[name], may_rejoin=func)
        return func

    return register


def connection_hooks(name: str, *, on_connect=None, on_disconnect=None):
    """Set `async def hook(ctx)` to run when a socket connects to / disconnects from
    namespace `name`, from a module other than the one that declared it."""
    REGISTRY.namespaces[name] = replace(REGISTRY.namespaces[name], on_connect=on_connect,
                                        on_disconnect=on_disconnect)
