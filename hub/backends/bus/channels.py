"""The bus's channels on Redis (redis.py): the common one, which every instance
reads, and one per room that an instance reads only while it has a socket there.

A message goes where its route (base.py `Route`) says: to the channels of its rooms,
or to the common one when it names none. Every channel lives under the bus's hash
tag, so on a Redis Cluster they all share the slot of the logs: the append script
can still log and publish in one step, and one connection reads them all, in the
order they were published.

This module keeps which room channels the instance wants, which of them Redis has
confirmed on the current connection (a join waits for that, so nothing published
for the room after the join is missed), and the (UN)SUBSCRIBE commands not yet
sent. It does no I/O: the broker sends what it hands out."""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from hub.backends.bus.base import Route

# Channels per (UN)SUBSCRIBE command: a resubscription after a lost connection
# sends them all, in commands of this many.
CHUNK = 1000
# Messages sent to several channels carry a token; an instance subscribed to more
# than one of them handles the first copy only. Tokens remembered per instance:
# the copies of one message arrive one right after the other.
TOKENS = 10_000

Command = tuple[str, list[str]]  # ("SUBSCRIBE" | "UNSUBSCRIBE", channels)


class Channels:
    def __init__(self, common: str, routed: bool, *, sharded: bool) -> None:
        self.common = common
        self.routed = routed
        self._sub, self._unsub = ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        # Room channel -> resolved once Redis confirmed it on the current connection.
        self.wanted: dict[str, asyncio.Future] = {}
        self._pending: list[tuple[bool, str]] = []  # (subscribe?, channel), not yet sent
        self._leaving: dict[str, int] = {}  # our UNSUBSCRIBEs Redis has not confirmed yet
        self._tokens: OrderedDict[bytes, None] = OrderedDict()

    # --- where messages go -----------------------------------------------------------

    def of_room(self, namespace: str, room: str) -> str:
        return f"{self.common}:room:{namespace}:{room}"

    def of(self, to: Route) -> tuple[str, ...]:
        if to is None or not self.routed:
            return (self.common,)
        namespace, rooms = to
        return tuple(dict.fromkeys(self.of_room(namespace, room) for room in rooms))

    def of_entry(self, entry: dict, to_all: set[tuple[str, str]]) -> tuple[str, ...]:
        """A durable entry's channels: its rooms', or the common one if every
        instance acts on it."""
        if (entry["ns"], entry["ev"]) in to_all:
            return (self.common,)
        return self.of((entry["ns"], entry["r"]))

    def first_copy(self, token: bytes) -> bool:
        """False for a message already handled here through another of its channels."""
        tokens = self._tokens
        if token in tokens:
            return False
        tokens[token] = None
        if len(tokens) > TOKENS:
            tokens.popitem(last=False)
        return True

    # --- what the instance reads -----------------------------------------------------

    def want(self, channel: str) -> bool:
        """True if the channel is new: a SUBSCRIBE is pending for it."""
        if channel in self.wanted:
            return False
        self.wanted[channel] = asyncio.get_running_loop().create_future()
        self._pending.append((True, channel))
        return True

    def drop(self, channel: str) -> None:
        confirmed = self.wanted.pop(channel, None)
        if confirmed is None:
            return
        if not confirmed.done():
            confirmed.set_result(None)
        self._pending.append((False, channel))

    def take_pending(self) -> list[Command]:
        """The pending changes as commands, in order (consecutive ones of a kind
        together); from here on their confirmations are expected."""
        commands: list[Command] = []
        for subscribe, channel in self._pending:
            name = self._sub if subscribe else self._unsub
            if commands and commands[-1][0] == name and len(commands[-1][1]) < CHUNK:
                commands[-1][1].append(channel)
            else:
                commands.append((name, [channel]))
            if not subscribe:
                self._leaving[channel] = self._leaving.get(channel, 0) + 1
        self._pending.clear()
        return commands

    def all_commands(self) -> list[Command]:
        """For a new connection: the common channel first, then every wanted one,
        each waiting for its confirmation again."""
        self._pending.clear()
        self._leaving.clear()
        loop = asyncio.get_running_loop()
        for channel, confirmed in self.wanted.items():
            if confirmed.done():
                self.wanted[channel] = loop.create_future()
        channels = list(self.wanted)
        return [(self._sub, [self.common] + channels[:CHUNK - 1])] + [
            (self._sub, channels[i:i + CHUNK]) for i in range(CHUNK - 1, len(channels), CHUNK)]

    def confirmed(self, channel: str) -> None:
        waiting = self.wanted.get(channel)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def left(self, channel: str) -> bool:
        """An unsubscribe confirmation: False if the instance did not ask for it
        (on a cluster: the channels' slot moved)."""
        count = self._leaving.get(channel)
        if not count:
            return False
        if count == 1:
            del self._leaving[channel]
        else:
            self._leaving[channel] = count - 1
        return True

    def lost(self) -> None:
        """The connection is gone: nobody waits for a confirmation that cannot come
        (the catch-up after the resubscription covers what was missed)."""
        for confirmed in self.wanted.values():
            if not confirmed.done():
                confirmed.set_result(None)
