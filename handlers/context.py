"""What an operation runs over: the actor, the database, the shared backends, and an
event buffer that the transport flushes only after the operation returned."""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Iterable

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from handlers import ports
from handlers.local import InstanceLocal
from handlers.roles import SERVICE, BOT, STAFF, ACCOUNTS
from storage import outbox
from storage.base import PgTransaction


@dataclass(frozen=True)
class Actor:
    """Who is calling, as proven by a token at the edge. Handlers never see tokens."""

    role: str  # user | operator | admin | service | visitor (a bot is a service with assistant_id)
    id: int | None = None  # user id; None for services and visitors
    name: str | None = None  # service name
    jti: str | None = None
    expires_at: int | None = None
    assistant_id: int | None = None  # bots: the one assistant they speak for
    dialog_id: int | None = None  # visitors: the one dialog they may reach
    visitor_id: str | None = None

    @property
    def acts_as(self) -> str:
        """The role that the registry's role sets are checked against. A service token
        scoped to one assistant is a `bot`: admitted only where a set names `bot` (its
        assistant's dialogs), never with an unscoped service's powers (orders,
        notifications, publishing)."""
        return BOT if self.role == SERVICE and self.assistant_id is not None else self.role

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF

    @property
    def is_user(self) -> bool:
        """Has a user account (end user or staff)."""
        return self.id is not None and self.role in ACCOUNTS


def user_room(user_id: int) -> str:
    """Every socket of a user joins this room in each namespace it connects to."""
    return f"user:{user_id}"


# Every socket joins this room in each namespace it connects to: the audience of an
# event to everyone in the namespace (a trend, a maintenance notice). A room like any
# other, so the bus, the log, recovery, `sync` and every transport need no case of it.
EVERYONE = "everyone"


@dataclass
class Outgoing:
    namespace: str
    event: str
    data: dict
    rooms: list[str]
    skip_sid: str | None = None
    event_id: int | None = None  # its outbox id: set for events emitted inside ctx.transaction()


@dataclass
class Context:
    actor: Actor
    db: ports.Database
    settings: ports.Settings
    coalescing: ports.Coalescing | None = None  # shared by instances
    origin: str | None = None  # socket id of the request, if it came over Socket.IO
    events: list[Outgoing] = field(default_factory=list)
    presence: ports.Presence | None = None  # operators' consoles, shared by instances
    user_presence: ports.Presence | None = None  # users' /chat sockets
    metrics: ports.Metrics | None = None
    streams: ports.Streams | None = None  # streamed bot replies (hub/delivery/streams.py)
    # What operations keep on this instance between calls (handlers/local.py). The
    # instance gives every Context the same one; a Context made alone has its own.
    local: InstanceLocal = field(default_factory=InstanceLocal)
    # Rooms the requesting socket joins / leaves once the operation succeeded
    # (applied by the Socket.IO adapter to `origin`; ignored over HTTP).
    joins: list[str] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)
    # Set by the Socket.IO adapter: `await enter(room)` joins the requesting socket at
    # once, for an operation that must not miss what happens between its read and
    # its end (resource:watch). Authorize first; `join` it too (recovery tracks it).
    enter: Callable[[str], Awaitable[None]] | None = None

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession | PgTransaction]:
        """A database transaction for this operation. Events emitted inside it
        belong to the write: they are recorded with it, and sent only if it commits."""
        return shared_transaction(self.db, [self])

    def join(self, room: str) -> None:
        """Make the requesting socket join `room` once the operation succeeded.
        Authorize before calling: a client never names a room itself."""
        self.joins.append(room)

    def leave(self, room: str) -> None:
        """Make the requesting socket leave `room` once the operation succeeded."""
        self.leaves.append(room)

    def emit(
        self,
        event: BaseModel,
        *,
        users: Iterable[int] = (),
        rooms: Iterable[str] = (),
        skip_origin: bool = False,
    ) -> None:
        """Buffer a server event (an instance of a registered event model) for the
        given users' personal rooms and/or named rooms. Sent after the operation
        returns, so a failed operation sends nothing.

        Emit inside `ctx.transaction()` for events that reflect a stored change;
        outside it (typing, presence) the event is volatile."""
        targets = _targets(users, rooms)
        if targets:
            self._buffer(type(event), event.model_dump(mode="json"), targets, skip_origin)

    def emit_dumped(
        self,
        model: type[BaseModel],
        data: dict,
        *,
        users: Iterable[int] = (),
        rooms: Iterable[str] = (),
        skip_origin: bool = False,
    ) -> None:
        """`emit` for a payload already dumped in JSON mode from an instance of `model`,
        for a hot path that sends one payload as several events (message:new and
        message:sent): built and dumped once instead of once per event."""
        targets = _targets(users, rooms)
        if targets:
            self._buffer(model, data, targets, skip_origin)

    def _buffer(self, model: type[BaseModel], data: dict, targets: list[str], skip_origin: bool) -> None:
        spec = model.__server_event__
        self.events.append(Outgoing(spec.namespace, spec.event, data, targets,
                                    self.origin if skip_origin else None))


def _targets(users: Iterable[int], rooms: Iterable[str]) -> list[str]:
    targets = [user_room(u) for u in dict.fromkeys(users)]
    if rooms:
        targets += rooms
    return targets


@asynccontextmanager
async def shared_transaction(db: ports.Database, contexts: list[Context], *,
                             driver_only: bool = False) -> AsyncIterator[AsyncSession | PgTransaction]:
    """One transaction for the writes of one or more operations (several: a group
    commit). The events each context emits inside it are stored in the outbox with
    the write, and dropped if it does not commit. `driver_only`: every statement of
    the write runs on the driver; the database decides what that allows
    (`Database.write_transaction`)."""
    starts = [len(ctx.events) for ctx in contexts]
    try:
        async with db.write_transaction(driver_only=driver_only) as tx:
            yield tx
            stored = [event for ctx, start in zip(contexts, starts) for event in ctx.events[start:]]
            if stored:
                for event, event_id in zip(stored, await outbox.add(tx, stored)):
                    event.event_id = event_id
    except BaseException:
        for ctx, start in zip(contexts, starts):
            del ctx.events[start:]  # a rolled-back write sends nothing
        raise

