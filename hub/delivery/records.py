"""The records that delivery passes around: a durable event, an entry of the event
log, a recovery's read of the log, and the messages between instances on the bus.

On the wire (the bus and the log, msgpack on Redis) they keep the compact keys they
always had, so instances of the version before and after this one understand each
other during a rolling deploy. The keys are written and read here only
(`to_wire` / `from_wire`, `encode` / `decode`); the bus backend (hub/backends/bus/codec.py) knows
just what it must of an entry to log it: its namespace ("ns") and event id ("id")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

# skip_sid: the socket (or sockets: a recovery's, see Fanout) that does not get the event.
Skip = str | list[str] | None


@dataclass(frozen=True, slots=True)
class DurableEvent:
    """A server event written with an operation's transaction: stored in the outbox,
    then appended to its namespace's log, once (`event_id`, its outbox id)."""

    namespace: str
    event: str
    data: Any
    rooms: list[str]
    skip_sid: Skip
    event_id: int

    def to_wire(self) -> dict:
        return {"ns": self.namespace, "ev": self.event, "d": self.data, "r": self.rooms, "s": self.skip_sid,
                "id": self.event_id}

    @staticmethod
    def from_wire(raw: dict) -> DurableEvent:
        return DurableEvent(raw["ns"], raw["ev"], raw["d"], raw["r"], raw["s"], raw["id"])


class LogEntry(NamedTuple):
    """A durable event in the log, at its offset ("<ms>-<seq>", hub.broker.offset_key)."""

    offset: str
    event: DurableEvent


@dataclass(slots=True)
class Replayed:
    """What a recovery read of the log: the connection's entries after its offset,
    oldest first, and the newest offset read (None: nothing after the offset). Every
    live event up to `head` was read, the connection's or not."""

    entries: list[LogEntry]
    head: str | None

    @staticmethod
    def from_wire(rows: Iterable[tuple[str, dict]], head: str | None) -> Replayed:
        return Replayed([LogEntry(offset, DurableEvent.from_wire(raw)) for offset, raw in rows], head)


def missed_by(rooms: Iterable[str], old_sid: str | None) -> Callable[[dict], bool]:
    """Which logged entries (as the log holds them) a recovering connection missed:
    those of its rooms, but not its own (it has those). Read on the wire form: a
    replay scans the whole window, and decodes only what it keeps."""
    rooms = set(rooms)
    return lambda raw: raw.get("s") != old_sid and not rooms.isdisjoint(raw["r"])


# --- the bus ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VolatileEvent:
    """A server event sent at once, without the log (typing, presence)."""

    namespace: str
    event: str
    data: Any
    rooms: list[str]
    skip_sid: Skip


@dataclass(frozen=True, slots=True)
class Emitted:
    """Volatile events of `origin`'s, for the other instances' sockets."""

    origin: str
    events: list[VolatileEvent]


@dataclass(frozen=True, slots=True)
class Logged:
    """Durable events the log took, with their offsets, for every instance (the
    appending one too; `origin` None: read back from the log after a loss of the bus)."""

    origin: str | None
    entries: list[LogEntry]


@dataclass(frozen=True, slots=True)
class Revoked:
    """A token revoked on `origin`: every instance disconnects its sockets."""

    origin: str
    jti: str
    ttl: int


@dataclass(frozen=True, slots=True)
class Shared:
    """A broadcast to a whole namespace, for the other instances (the Admin UI's)."""

    origin: str
    namespace: str
    event: str
    args: list


BusMessage = Emitted | Logged | Revoked | Shared


def encode(message: Emitted | Revoked | Shared) -> dict:
    """The wire form of a message this instance publishes (`Logged` ones are the
    bus backend's: it writes them as it appends)."""
    if isinstance(message, Emitted):
        return {"t": "emit", "e": [[e.namespace, e.event, e.data, e.rooms, e.skip_sid] for e in message.events],
                "o": message.origin}
    if isinstance(message, Revoked):
        return {"t": "revoke", "j": message.jti, "ttl": message.ttl, "o": message.origin}
    return {"t": "share", "n": message.namespace, "ev": message.event, "a": message.args, "o": message.origin}


def decode(raw: dict) -> BusMessage | None:
    """A message off the bus; None for a kind this version does not know."""
    kind = raw.get("t")
    if kind == "log":
        return Logged(raw.get("o"), [LogEntry(offset, DurableEvent.from_wire(entry))
                                     for entry, offset in zip(raw["e"], raw["x"])])
    if kind == "emit":
        return Emitted(raw.get("o"), [VolatileEvent(*e) for e in raw["e"]])
    if kind == "revoke":
        return Revoked(raw.get("o"), raw["j"], raw["ttl"])
    if kind == "share":
        return Shared(raw.get("o"), raw.get("n"), raw["ev"], raw["a"])
    return None
