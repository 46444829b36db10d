"""The bus between instances, and the log of recent durable events: the interface
every bus backend implements (memory.py, redis.py), and the helpers they share.

Two ways onto the bus:

* `publish(message)`: volatile messages (typing, presence, revocations). Every
  started broker on the bus gets it, the publisher's own included; callers filter
  by origin. On Redis, what is published while the previous PUBLISH is on its
  way (or within one loop iteration) goes out together as one batch, in order.
* `append(entries)`: durable events. Each entry is appended to its namespace's log,
  which assigns its offset, and the batch goes out on the bus with the offsets, all
  in one atomic step. Every instance, the appending one included, delivers from the
  bus, so every instance delivers durable events in offset order.

Where a message goes: `publish` and `append` take the rooms it is for (per
namespace), and a broker that routes (`routed`: Redis) sends it only to the
instances subscribed to one of them (`subscribe`: they have a socket there), or to
every instance when it names none (revocations, barriers, and the durable events
the instance itself acts on: `everywhere`). A message for several rooms reaches an
instance subscribed to more than one of them once. A broker that does not route
(memory) sends everything everywhere, as every broker did before.

`replay(namespace, offset, wanted)` reads the log after an offset up to its newest
entry and keeps the entries a reconnecting client missed (its rooms'); `since` reads
every entry after an offset. The log keeps `retention` seconds of events.
`barrier()` returns once everything published before it has been handled here.

Messages and entries are encoded by codec.py: nothing is ever unpickled."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable

Handler = Callable[[dict], Awaitable[None]]
# (namespace, rooms): the instances with a socket in one of the rooms get the message;
# None: every instance.
Route = tuple[str, list[str]] | None

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

    # Whether messages go only where `subscribe` asked for them (else: everywhere).
    routed = False
    # Bytes read from a shared bus so far (None: there is none, in one process).
    received_bytes: int | None = None

    def __init__(self, retention: float) -> None:
        self.retention = retention
        # (namespace, event) of the durable events every instance gets, whatever its
        # rooms: the instance itself acts on them (Fanout.listen).
        self.to_all: set[tuple[str, str]] = set()

    def everywhere(self, namespace: str, event: str) -> None:
        """Send every durable `event` of `namespace` to every instance."""
        self.to_all.add((namespace, event))

    def subscribe(self, namespace: str, room: str) -> None:
        """This instance has a socket in `room` now: get its messages (`subscribed`
        says when they flow). A broker that does not route has nothing to do."""

    def unsubscribe(self, namespace: str, room: str) -> None:
        """This instance has no socket in `room` any more."""

    async def subscribed(self, namespace: str, room: str) -> None:
        """Returns once what is published for `room` from now on reaches this
        instance (at once while the bus is down: its catch-up covers the room)."""

    @abstractmethod
    async def start(self, handler: Handler) -> None: ...

    @abstractmethod
    async def publish(self, message: dict, to: Route = None) -> None:
        """Send to the brokers on the bus that `to` names (every started one for
        None), the publisher's own included; raises BrokerUnavailable if it cannot."""

    def publish_soon(self, message: dict, to: Route = None) -> Awaitable[None]:
        """Start publishing and return what to await for the outcome (as `publish`).
        A broker that can puts the message on its way before the caller's next
        await; this default publishes only when awaited."""
        return self.publish(message, to)

    @abstractmethod
    async def append(self, origin: str, entries: list[dict], *, relay: bool = False,
                     hold: bool = False) -> list[str | None] | None:
        """Log durable entries (each with its "ns", event "ev", rooms "r" and event
        "id") and send them, with their offsets, as `{"t": "log", "o": origin, "e":
        entries, "x": offsets}` messages, to the instances with a socket in one of an
        entry's rooms (`to_all`: to every instance), each instance getting its
        entries in offset order. An id logged before is skipped (None): the log holds each event once.

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
