"""The rooms this instance has a socket in, for a broker that routes (Redis): the
instance gets a room's messages from the bus only while it has a member there.

Each holder of rooms (each Socket.IO server's manager, the plain WebSocket and SSE
members) tells when one of its rooms gains its first socket (`occupied`) or loses
its last (`vacated`); a join then waits for `ready`, so nothing published for the
room after the join is missed. The broker subscribes when the first holder has the
room, and unsubscribes `linger` seconds after the last let it go: a room emptied by
a reconnect is usually back within seconds, and its channel costs nothing meanwhile
(its messages reach no socket)."""
from __future__ import annotations

import asyncio
import time

from engine import cancel_and_wait
from hub.backends.bus import Broker

LINGER = 30.0


class Interest:
    def __init__(self, broker: Broker, linger: float = LINGER) -> None:
        self.broker = broker
        self.linger = linger
        self._holders: dict[tuple[str, str], int] = {}
        self._vacated: dict[tuple[str, str], float] = {}  # when the last holder let go
        self._sweeper: asyncio.Task | None = None

    def occupied(self, namespace: str, room: str) -> None:
        key = (namespace, room)
        held = self._holders.get(key, 0)
        self._holders[key] = held + 1
        if not held and self._vacated.pop(key, None) is None:
            self.broker.subscribe(namespace, room)

    def vacated(self, namespace: str, room: str) -> None:
        key = (namespace, room)
        held = self._holders.get(key, 0) - 1
        if held > 0:
            self._holders[key] = held
        elif key in self._holders:
            del self._holders[key]
            self._vacated[key] = time.monotonic()
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep(), name="bus-interest-sweeper")

    def held(self, namespace: str, room: str) -> int:
        """How many holders have the room (0: none; it may still linger)."""
        return self._holders.get((namespace, room), 0)

    def lingering(self, namespace: str, room: str) -> bool:
        """Nobody has the room, and its channel is still read until the linger ends."""
        return (namespace, room) in self._vacated

    async def ready(self, namespace: str, room: str) -> None:
        await self.broker.subscribed(namespace, room)

    async def _sweep(self) -> None:
        """Unsubscribes what stayed vacant for `linger` seconds; ends when nothing is."""
        while self._vacated:
            await asyncio.sleep(self.linger / 2)
            expired = time.monotonic() - self.linger
            for key in [key for key, at in self._vacated.items() if at <= expired]:
                del self._vacated[key]
                self.broker.unsubscribe(*key)

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
