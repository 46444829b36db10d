"""The store of recovery session records (hub/delivery/recovery.py): one record per
(private session id, namespace), kept for the recovery window after its socket
left. Records expire on their own (a ttl per save); `touch` extends live ones."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What a recovery needs of a socket's session: its namespace, whose it is (a
    recovering token must be the same identity's), the rooms it was in, its last
    sid (its own events are not replayed to it) and where its events begin in the
    log."""

    namespace: str
    identity: str
    rooms: tuple[str, ...]
    sid: str
    start: str

    # The stored form (msgpack on Redis). The short keys are those records were
    # always stored with: records written before an upgrade stay readable.
    def to_wire(self) -> dict:
        return {"ns": self.namespace, "who": self.identity, "rooms": list(self.rooms), "sid": self.sid,
                "start": self.start}

    @classmethod
    def from_wire(cls, raw: dict) -> SessionRecord:
        return cls(raw["ns"], raw["who"], tuple(raw["rooms"]), raw["sid"], raw["start"])


class Sessions(ABC):
    @abstractmethod
    async def save(self, pid: str, record: SessionRecord, ttl: float) -> None:
        """Store (or replace) the record, to expire `ttl` seconds from now."""

    @abstractmethod
    async def get(self, pid: str) -> SessionRecord | None:
        """The unexpired record, or None."""

    @abstractmethod
    async def touch(self, pids: list[str], ttl: float) -> None:
        """Expire these records `ttl` seconds from now (those still there)."""

    @abstractmethod
    async def delete(self, pid: str) -> None: ...

    async def close(self) -> None:
        pass
