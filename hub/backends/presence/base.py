"""Operator presence, shared by every instance.

An operator has any number of consoles (connections), on any instance. Each
console is live while it heartbeats within `timeout` seconds. The operator's
status is the one they chose (online|away, `update`) while at least one console
is live, and stays so for a `grace` period after the last console went away
(disconnected, or stopped heartbeating), so that a page reload does not flap
them; after that they are offline. Choosing `offline` is offline at once.

`MemoryPresence` (memory.py) serves a single instance; `RedisPresence` (redis.py)
is shared by all instances on one Redis. Both pass one contract suite
(tests/backends/test_presence.py).
Times are epoch seconds from the instances' clocks, which must roughly agree.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

STATUSES = ("online", "away", "offline")
# Forget an operator (and a console) nobody has heard of for this long.
FORGET_AFTER = 24 * 3600
# An instance not stamped alive for this long is dead (RedisPresence), with its consoles.
INSTANCE_TTL = 5.0


@dataclass(frozen=True)
class PresenceRecord:
    operator_id: int
    status: str  # effective status: online | away | offline
    chosen: str  # what the operator chose: online | away | offline
    last_seen: float | None  # last heartbeat, connect or disconnect
    max_active_chats: int | None
    offline_since: float | None  # when the status became offline, if it is
    consoles: int  # live consoles


@dataclass
class RawPresence:
    chosen: str = "online"
    chosen_at: float = 0.0
    max_active_chats: int | None = None
    disconnected_at: float = 0.0
    conns: dict[str, float] = field(default_factory=dict)  # console -> last heartbeat
    # Consoles whose instance died -> when it was last alive (RedisPresence).
    lost: dict[str, float] = field(default_factory=dict)
    forgot_at: float = 0.0  # when old consoles were last dropped (MemoryPresence)


class Presence(ABC):
    def __init__(self, *, timeout: float, grace: float) -> None:
        self.timeout = timeout
        self.grace = grace

    def _record(self, operator_id: int, raw: RawPresence, now: float) -> PresenceRecord:
        live = [hb for hb in raw.conns.values() if hb >= now - self.timeout]
        # When the last console went away: its disconnect, its heartbeat lapsing, or
        # its instance dying.
        gone_at = max([raw.disconnected_at] + [hb + self.timeout for hb in raw.conns.values()]
                      + list(raw.lost.values()))
        seen = max([raw.disconnected_at, raw.chosen_at] + list(raw.conns.values())
                   + list(raw.lost.values())) or None
        offline_since = None
        if raw.chosen == "offline":
            status, offline_since = "offline", raw.chosen_at
        elif live or now <= gone_at + self.grace:
            status = raw.chosen
        else:
            status, offline_since = "offline", gone_at + self.grace
        return PresenceRecord(operator_id=operator_id, status=status, chosen=raw.chosen, last_seen=seen,
                              max_active_chats=raw.max_active_chats, offline_since=offline_since,
                              consoles=len(live))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    @abstractmethod
    async def connect(self, operator_id: int, console: str) -> None:
        """A console of the operator connected (counts as a heartbeat). A connecting
        console brings an operator who chose `offline` back to `online`."""

    @abstractmethod
    async def heartbeat(self, operator_id: int, console: str) -> None:
        """The console is alive (registers it if unknown)."""

    @abstractmethod
    async def disconnect(self, operator_id: int, console: str) -> None:
        """The console went away; the grace period starts if it was the last."""

    @abstractmethod
    async def update(self, operator_id: int, *, status: str | None = None,
                     max_active_chats: int | None = None) -> None:
        """The operator chose a status and/or their chat limit."""

    @abstractmethod
    async def get(self, operator_id: int, now: float | None = None) -> PresenceRecord | None:
        """The operator's presence; None if never seen (or forgotten)."""

    @abstractmethod
    async def all(self, now: float | None = None) -> list[PresenceRecord]:
        """Every operator seen in the last day."""

    async def many(self, ids: list[int], now: float | None = None) -> list[PresenceRecord | None]:
        """`get` of each id, at one moment."""
        now = now or time.time()
        return [await self.get(i, now) for i in ids]

    @abstractmethod
    async def claim_change(self, operator_id: int, status: str) -> bool:
        """Atomically record `status` as the last announced one. True for exactly
        one caller per change, whichever instance it runs on: that caller announces
        it. Never announced counts as `offline`."""

    # Looks due: who to look at again, instead of a sweep over everyone (users'
    # presence: many more than operators).

    @abstractmethod
    async def look_at(self, ids: list[int], at: float) -> None:
        """Ask for a look at these ids' status at `at` (e.g. when a grace period ends).
        A look already asked for happens at the later of the two times: a change and
        its undoing within that time (a reload) are then never announced."""

    @abstractmethod
    async def due(self, now: float | None = None, limit: int = 1000) -> list[int]:
        """The ids whose look is due, each handed to exactly one caller on any
        instance; with them, the ids that had consoles on an instance found dead
        (due when their grace period ends)."""
