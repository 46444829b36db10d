"""What the fault tests build on: a throwaway PostgreSQL, a private redis-server (with
or without AOF), a TCP proxy that can drop, blackhole and re-route connections, and
`hub serve` processes. Each starts and stops only what it started, by PID."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None) \
    if Path("/usr/lib/postgresql").exists() else None


def _as_postgres(args: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as `postgres` then."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def postgres_available() -> bool:
    return PG_BIN is not None and (PG_BIN / "initdb").exists()


class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory (initdb + pg_ctl), on a free
    loopback port, that a test may stop and start; removed by `destroy`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hub-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.log = self.dir / "pg.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(_as_postgres([str(PG_BIN / args[0]), *args[1:]]), capture_output=True,
                              check=check, timeout=60)

    def init(self) -> "ThrowawayPostgres":
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync")
        return self.start()

    def start(self) -> "ThrowawayPostgres":
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
                "-c fsync=off -c max_connections=60 -c shared_buffers=16MB")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30", "start")
        return self

    def stop(self) -> None:
        """Fast shutdown: every connection is closed, new ones are refused."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A redis-server of the test's own on a free port; `aof` turns on the
    append-only file (fsync every write), so a restart keeps the data."""

    def __init__(self, aof: bool = False) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hub-redis-"))
        self.aof = aof
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", str(self.dir), "--appendonly", "yes" if self.aof else "no"]
        if self.aof:
            args += ["--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout
            if out.strip() == b"PONG":
                return self
            time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def destroy(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class TcpProxy:
    """An asyncio TCP proxy on a loopback port in front of `target` (host, port).

    * `drop()` closes every connection it carries (the peers see them end);
    * `blackhole()` stops forwarding without closing anything, as a partitioned
      network does, until `heal()` delivers what was held; new connections are
      accepted and left silent;
    * `route(target)` sends the next connections elsewhere."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.blackholed = False
        self._healed = asyncio.Event()
        self._healed.set()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
        self._healed.set()

    def route(self, target: tuple[str, int]) -> None:
        self.target = target

    async def close(self) -> None:
        self.heal()
        self.drop()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
