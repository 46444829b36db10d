"""What a Context holds, as the operations see it: typed Protocols, satisfied
structurally by the hub's services (storage.db.Database, hub.settings.Settings,
the limits/coalescing/presence/streams backends, hub.metrics.Metrics). Handlers depend on
these, never on hub/: the instance picks the implementations and builds the
Context (hub/app.py).

Only what the handlers use is here; a backend may offer more. The ports of the
HTTP-only operations (tokens, password hashing, revocation, the fan-out: fields of
their Context subclasses) are here too, at the end: every port in one module.

The two stream types are defined here, not by the streams backend: the
operations catch the one and read the other, so the backend raises and returns
these (hub/delivery/streams.py and hub/backends/streams/ import them)."""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from storage.base import PgTransaction

if TYPE_CHECKING:
    from handlers.context import Outgoing  # which imports this module


class Database(Protocol):
    """storage.db.Database."""

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back on error."""
        ...

    def write_transaction(self, *, driver_only: bool = True
                          ) -> AbstractAsyncContextManager[AsyncSession | PgTransaction]:
        """The transaction of a write; `driver_only`: all its statements run on the
        driver. The database decides whether it is a bare-driver PgTransaction
        (`can_write_lean`: PostgreSQL) or the usual session."""
        ...


class Settings(Protocol):
    """The settings the operations and their periodic jobs read (hub.settings.Settings)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def max_message_chars(self) -> int: ...
    @property
    def orphan_attachment_age(self) -> float: ...
    @property
    def scheduler_interval(self) -> float: ...
    @property
    def presence_timeout(self) -> float: ...
    @property
    def presence_grace(self) -> float: ...
    @property
    def user_presence_batch(self) -> float: ...
    @property
    def requeue_delay(self) -> float: ...
    @property
    def max_active_chats(self) -> int: ...
    @property
    def handoff_threshold(self) -> float: ...
    @property
    def transfer_timeout(self) -> float: ...
    @property
    def stream_max_chars(self) -> int: ...
    @property
    def stream_timeout(self) -> float: ...


class Limits(Protocol):
    """The login back-off shared by every instance (hub/backends/limits/: in memory, or on Redis)."""

    async def locked(self, key: str) -> int:
        """Seconds `key` is still locked after its failures (0: not locked)."""
        ...

    async def failed(self, key: str, free: int, cap: int) -> int:
        """Count a failure of `key`: locked after `free` in a row, doubling up to `cap` s."""
        ...

    async def forgive(self, key: str) -> None:
        """A success: forget the failures of `key`."""
        ...


class Coalescing(Protocol):
    """"At most once per interval" shared by every instance (hub/backends/coalescing/)."""

    async def throttle(self, group: str, key: str, interval: float) -> bool:
        """True at most once per `interval` for `key` in `group`, across instances."""
        ...

    async def due(self, group: str, interval: float, limit: int = 100) -> list[str]:
        """Keys of `group` whose `interval` has passed, each to one caller."""
        ...


class PresenceRecord(Protocol):
    @property
    def operator_id(self) -> int: ...
    @property
    def status(self) -> str: ...  # effective: online | away | offline
    @property
    def chosen(self) -> str: ...
    @property
    def last_seen(self) -> float | None: ...
    @property
    def max_active_chats(self) -> int | None: ...
    @property
    def offline_since(self) -> float | None: ...
    @property
    def consoles(self) -> int: ...


class Presence(Protocol):
    """Who is connected, across instances (hub/backends/presence/): operators' consoles,
    and users' /chat sockets (the same store, its ids are users)."""

    async def connect(self, operator_id: int, console: str) -> None: ...
    async def heartbeat(self, operator_id: int, console: str) -> None: ...
    async def disconnect(self, operator_id: int, console: str) -> None: ...
    async def update(self, operator_id: int, *, status: str | None = None,
                     max_active_chats: int | None = None) -> None: ...
    async def get(self, operator_id: int, now: float | None = None) -> PresenceRecord | None: ...
    async def all(self, now: float | None = None) -> list[PresenceRecord]: ...
    async def many(self, ids: list[int], now: float | None = None) -> list[PresenceRecord | None]: ...
    async def claim_change(self, operator_id: int, status: str) -> bool: ...
    async def look_at(self, ids: list[int], at: float) -> None: ...
    async def due(self, now: float | None = None, limit: int = 1000) -> list[int]: ...


class Histogram(Protocol):
    def observe(self, amount: float) -> None: ...


class Metrics(Protocol):
    """hub.metrics.Metrics: what the operations measure."""

    @property
    def handoff_wait(self) -> Histogram: ...


@dataclass(frozen=True)
class OpenStream:
    """A streamed bot reply so far."""

    stream_id: str
    dialog_id: int
    assistant_id: int
    seq: int
    text: str


class StreamError(Exception):
    """`reason`: missing (no such stream), closed:<why>, too_long, or busy:<stream id>."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamBuffer(Protocol):
    """The in-flight buffer of streamed replies (hub/delivery/streams.py, hub/backends/streams/)."""

    async def open(self, dialog_id: int, assistant_id: int) -> str: ...
    async def append(self, stream_id: str, assistant_id: int, text: str, max_chars: int) -> OpenStream: ...
    async def get(self, stream_id: str) -> OpenStream: ...
    async def close(self, stream_id: str, reason: str) -> OpenStream | None: ...
    async def of_dialog(self, dialog_id: int) -> list[OpenStream]: ...
    async def idle(self, seconds: float, limit: int = 100) -> list[str]: ...


class StreamLocks(Protocol):
    def lock(self, stream_id: str) -> AbstractAsyncContextManager[object]: ...
    def drop(self, stream_id: str) -> None: ...


class DeltaFloors(Protocol):
    def settle(self, sid: str, stream_id: str, seq: int) -> None:
        """The socket has the stream's text up to `seq`: send it only what follows."""
        ...


class Streams(Protocol):
    """hub.streams.StreamService: the buffer, per-stream locks, and sending deltas at once."""

    @property
    def buffer(self) -> StreamBuffer: ...
    @property
    def locks(self) -> StreamLocks: ...
    @property
    def deltas(self) -> DeltaFloors: ...

    async def send(self, event: BaseModel, rooms: list[str]) -> None: ...


# What the HTTP-only operations need of the hub beyond a Context: fields of their
# Context subclasses (handlers/accounts.py AccountContext, handlers/publish.py
# PublishContext), filled by the HTTP adapter (PORTS in hub/adapters/http/operations.py).

class Issued(Protocol):
    token: str
    jti: str
    expires_at: int


class TokenIssuer(Protocol):
    """The hub's JWTs (hub.auth.Tokens)."""

    access_ttl: int
    refresh_ttl: int

    def access(self, user_id: int, role: str) -> Issued: ...

    def refresh(self, user_id: int, family: str) -> Issued: ...

    def decode(self, token: str, *, typ: str | tuple[str, ...]) -> dict: ...


class Passwords(Protocol):
    """Password hashing (hub.auth: argon2, off the event loop)."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, stored: str | None) -> bool: ...


class Revoker(Protocol):
    """Ends access tokens on every instance (hub.delivery.revocation.Revocations)."""

    async def revoke(self, jti: str, expires_at: int) -> None: ...

    async def revoke_many(self, tokens: list[tuple[str, int]]) -> None: ...


class Delivery(Protocol):
    """The fan-out (hub.delivery.fanout.Fanout): sends events now, each one's log offset back."""

    async def deliver(self, events: list[Outgoing]) -> list[str | None]: ...
