"""What the fault tests build on: a throwaway PostgreSQL, a private redis-server (with
or without AOF) and `hub serve` processes; the TCP proxy that drops, blackholes and
re-routes connections is tests/support/proxy.py. Each starts and stops only what it
started, by PID."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import socketio

from tests.support.paths import JS_DIR
from tests.support.services import free_port

# Debian's PostgreSQL server programs (initdb, pg_ctl), newest version first.
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=None)


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
                "-c fsync=off -c max_connections=100 -c shared_buffers=16MB")
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


# --- the load, the receivers and the verdict --------------------------------------------

@dataclass
class Pair:
    """A sender and its receiver: one direct thread, written by one sender in order."""
    sender: int
    sender_token: str
    receiver: int
    receiver_token: str


@dataclass
class Verdict:
    acked: int = 0
    published: int = 0
    lost: int = 0  # acked messages a receiver never got, by events or (not recovered) by sync
    lost_recovered: int = 0  # ...of which the receiver's every reconnect said recovered
    duplicates: int = 0
    out_of_order: int = 0  # messages that arrived after a newer one of their thread
    publishes_lost: int = 0  # acked publishes missing on a socket that always recovered
    publish_duplicates: int = 0
    not_recovered: int = 0  # sockets whose reconnect had recovered false
    reconnects: int = 0
    sync_pages: int = 0  # the most pages one receiver's sync loop took
    sync_unended: int = 0  # sync loops that did not end within their bound
    errors: Counter = field(default_factory=Counter)  # what failed sends were answered


SYNC_LIMIT = 200  # the default page, as a client that follows the docs


class Load:
    """`pairs` senders (python-socketio clients, each moving to another instance when
    theirs goes away) sending `rate` message:send per second in all, a publisher
    sending `publish_rate` POST /api/publish, and the receivers: official clients
    in one node process (tests/js/fault_clients.mjs), each on /chat and
    /notifications through `receiver_urls` (round robin)."""

    def __init__(self, hub_urls: list[str], pairs: list[Pair], service_token: str, *, rate: float,
                 publish_rate: float) -> None:
        self.hub_urls = hub_urls
        self.pairs = pairs
        self.service_token = service_token
        self.interval = len(pairs) / rate
        self.publish_interval = 1 / publish_rate
        self.acked: dict[int, list[int]] = {p.receiver: [] for p in pairs}
        self.published: dict[int, list[int]] = {p.receiver: [] for p in pairs}
        self.errors: Counter = Counter()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.node: asyncio.subprocess.Process | None = None

    async def start_receivers(self, receiver_urls: list[str]) -> None:
        clients = []
        for i, pair in enumerate(self.pairs):
            url = receiver_urls[i % len(receiver_urls)]
            clients += [{"url": url, "ns": "/chat", "token": pair.receiver_token},
                        {"url": url, "ns": "/notifications", "token": pair.receiver_token}]
        self.node = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "fault_clients.mjs"), cwd=JS_DIR, limit=1 << 26,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        answer = await self._node({"clients": clients}, timeout=60)
        assert answer.get("ready") == len(clients), answer

    async def _node(self, command: dict, timeout: float = 30):
        self.node.stdin.write((json.dumps(command) + "\n").encode())
        await self.node.stdin.drain()
        return json.loads(await asyncio.wait_for(self.node.stdout.readline(), timeout))

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(i, pair)) for i, pair in enumerate(self.pairs)]
        self._tasks.append(asyncio.create_task(self._publish()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.node and self.node.returncode is None:
            self.node.kill()
            await self.node.wait()

    async def _send(self, index: int, pair: Pair) -> None:
        client, hop, n = None, index, 0
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.interval * index / len(self.pairs))  # spread the senders
        while not self._stop.is_set():
            if client is None or not client.connected:
                if client is not None:
                    await _quietly(client.disconnect())
                client = socketio.AsyncClient(reconnection=False)
                hop += 1
                try:
                    await client.connect(self.hub_urls[hop % len(self.hub_urls)], namespaces=["/chat"],
                                         auth={"token": pair.sender_token}, transports=["websocket"],
                                         wait_timeout=5)
                except Exception:
                    await asyncio.sleep(0.2)
                    continue
            started = loop.time()
            n += 1
            try:
                reply = await client.call("message:send", {"recipient_id": pair.receiver, "message": f"m{n}"},
                                          namespace="/chat", timeout=10)
            except Exception:
                self.errors["no answer"] += 1
                await _quietly(client.disconnect())
                continue
            if reply["ok"]:
                self.acked[pair.receiver].append(reply["data"]["id"])
            else:
                self.errors[reply["error"]["code"]] += 1
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
        if client is not None:
            await _quietly(client.disconnect())

    async def _publish(self) -> None:
        seq = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            while not self._stop.is_set():
                seq += 1
                pair = self.pairs[seq % len(self.pairs)]
                body = {"namespace": "/notifications", "event": "alert:triggered",
                        "to": {"user_ids": [pair.receiver]},
                        "data": {"alert_id": seq, "severity": "info", "message": f"alert {seq}"}}
                try:
                    async with http.post(self.hub_urls[seq % len(self.hub_urls)] + "/api/publish", json=body,
                                         headers={"Authorization": f"Bearer {self.service_token}"}) as resp:
                        if resp.status == 200:
                            self.published[pair.receiver].append(seq)
                        else:
                            self.errors[f"publish {resp.status}"] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    self.errors["publish no answer"] += 1
                await asyncio.sleep(self.publish_interval)

    async def report(self) -> list[dict]:
        return await self._node({"op": "report"})

    async def settle(self, timeout: float = 30) -> list[dict]:
        """Wait until every receiver has every message and every publish acked to it
        (publishes on the sockets that always recovered: the others get them by
        `sync`), or `timeout`, then report. Publishes too: an acked event can trail
        its ack by a relay pass (its instance left it in the outbox, as it does
        while appends are held after a partition), and the last publish, acked as
        the load stopped, was counted lost when the messages were all in before it
        (issue 17)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            report = await self.report()
            done = all(set(self.acked[p.receiver]) <= _ids(report[2 * i], "message:new", "message_id")
                       and (not all(report[2 * i + 1]["connects"][1:])
                            or set(self.published[p.receiver]) <= _ids(report[2 * i + 1], "alert:triggered",
                                                                       "alert_id"))
                       for i, p in enumerate(self.pairs))
            if done or asyncio.get_running_loop().time() > deadline:
                return report
            await asyncio.sleep(0.5)

    async def verdict(self, report: list[dict], sync_url: str) -> Verdict:
        v = Verdict(errors=self.errors)
        for i, pair in enumerate(self.pairs):
            chat, notes = report[2 * i], report[2 * i + 1]
            acked = self.acked[pair.receiver]
            v.acked += len(acked)
            got = [d["message_id"] for ev, d, _ in chat["events"] if ev == "message:new"]
            v.duplicates += len(got) - len(set(got))
            newest: dict[int, int] = {}
            for ev, d, _ in chat["events"]:
                if ev == "message:new":
                    if d["message_id"] < newest.get(d["thread_id"], 0):
                        v.out_of_order += 1
                    newest[d["thread_id"]] = max(newest.get(d["thread_id"], 0), d["message_id"])
            v.reconnects += len(chat["connects"]) - 1 + len(notes["connects"]) - 1
            missing = set(acked) - set(got)
            # Every receiver runs the sync loop (a client may at any time): it must end.
            synced, pages, ended = await sync_messages(sync_url, pair.receiver_token,
                                                       bound=len(acked) // SYNC_LIMIT + 3)
            v.sync_pages = max(v.sync_pages, pages)
            v.sync_unended += not ended
            if all(chat["connects"][1:]):
                v.lost_recovered += len(missing)
            else:  # told to sync: what sync brings back is not lost
                v.not_recovered += 1
                missing -= synced
            v.lost += len(missing)
            alerts = [d["alert_id"] for ev, d, _ in notes["events"] if ev == "alert:triggered"]
            v.publish_duplicates += len(alerts) - len(set(alerts))
            v.published += len(self.published[pair.receiver])
            if all(notes["connects"][1:]):
                v.publishes_lost += len(set(self.published[pair.receiver]) - set(alerts))
            else:
                v.not_recovered += 1
        return v


def _ids(client: dict, event: str, key: str) -> set:
    return {d[key] for ev, d, _ in client["events"] if ev == event}


async def sync_messages(url: str, token: str, bound: int) -> tuple[set[int], int, bool]:
    """The documented `sync` loop from the beginning: (message ids, pages, whether
    it ended within `bound` pages)."""
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, namespaces=["/chat"], auth={"token": token}, transports=["websocket"],
                         wait_timeout=5)
    ids, cursor, pages = set(), None, 0
    try:
        while pages < bound:
            reply = await client.call("sync", {"since": cursor, "limit": SYNC_LIMIT} if cursor else
                                      {"limit": SYNC_LIMIT}, namespace="/chat", timeout=30)
            assert reply["ok"], reply
            pages += 1
            ids |= {item["id"] for item in reply["data"]["items"]}
            cursor = reply["data"]["cursor"]
            if not reply["data"]["has_more"]:
                return ids, pages, True
        return ids, pages, False
    finally:
        await _quietly(client.disconnect())


async def _quietly(awaitable) -> None:
    try:
        await asyncio.wait_for(awaitable, 5)
    except Exception:
        pass
