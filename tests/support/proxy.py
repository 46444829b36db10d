"""A TCP proxy on a loopback port, in front of a hub or a Redis, whose connections a
test can break as a network does, neither side asking for it."""
from __future__ import annotations

import asyncio


class TcpProxy:
    """An asyncio TCP proxy in front of `target` (host, port); `port` once started.

    * `drop()` closes every connection it carries (the peers see them end);
    * `blackhole()` stops forwarding without closing anything, as a partitioned
      network does, until `heal()` delivers what was held; new connections are
      accepted and left silent;
    * `refuse()` closes new connections at once, until `accept()` (or `heal()`);
    * `cut()`: `refuse()` and `drop()`, a partition that peers notice;
    * `route(target)` sends the next connections elsewhere."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.blackholed = False
        self.refusing = False
        self._healed = asyncio.Event()
        self._healed.set()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                # Held, not lost: TCP delivers it late once the partition heals.
                await self._healed.wait()
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def drop(self) -> None:
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()

    def blackhole(self) -> None:
        self.blackholed = True
        self._healed.clear()

    def heal(self) -> None:
        self.blackholed = False
        self.refusing = False
        self._healed.set()

    def refuse(self) -> None:
        self.refusing = True

    def accept(self) -> None:
        self.refusing = False

    def cut(self) -> None:
        self.refuse()
        self.drop()

    def route(self, target: tuple[str, int]) -> None:
        self.target = target

    async def close(self) -> None:
        self.heal()
        self.drop()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
