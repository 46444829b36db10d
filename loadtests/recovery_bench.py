"""What the "no event lost" guarantees cost: acknowledged `message:send` per second,
ack latency and end-to-end delivery latency to a recipient on another instance.

    .venv/bin/python -m loadtests.recovery_bench                  # 3 variants x 3 rounds, ~5 min
    .venv/bin/python -m loadtests.recovery_bench --rounds 1 --only full,no-outbox

Every variant runs two real `hub serve` processes on loopback (A takes the writes, B
holds the recipients), on a PostgreSQL database of its own (created, then dropped) and a
Redis key prefix of its own (its keys deleted afterwards):

  full         the stack as shipped: transactional outbox, broker log with offsets,
               session records for connection state recovery (window 120 s).
  no-sessions  the same with HUB_RECOVERY_WINDOW=0: no session records are written or
               refreshed, no pid; the outbox and the log stay (they carry every
               durable event whatever the window).
  no-outbox    a throwaway copy of the code (in a temporary directory, never in the
               work tree) whose storage/outbox.py `add` hands out event ids without
               inserting a row and whose `remove_published` does nothing. Everything
               else is as shipped (log, offsets, session records); after the run the
               benchmark checks that nothing was inserted into this variant's outbox
               table and that something was into the others'. There is no product
               setting to turn the outbox off.

Also measured directly (on a fresh database of its own, hubs stopped): a write
transaction (one INSERT of a stand-in row, commit) against the same transaction plus the
outbox INSERT of one message:send's three events (as storage.outbox.add does it),
interleaved with the same rows by one Core INSERT .. RETURNING for comparison; and the
batched DELETE that removes them once published.

Load: --senders python-socketio clients on A (websocket), each sending to its own
recipient connected to B. Three phases per variant:
  connect --connects sockets connect to A's /chat, 10 at a time, then disconnect: what
          a session record (pid, Redis SET) adds to a connect.
  paced   --rate messages/s in total, open loop, for --paced-seconds: latency at a
          load far below saturation.
  closed  each sender sends its next message when the previous one is acked, for
          --closed-seconds: throughput, and latency at saturation.
Each message carries its send time; the recipient's `message:new` gives the end-to-end
latency (both clients run in this process, on the same clock). Over the closed phase the
benchmark also reads each hub process's CPU time (/proc) and divides by the acked
messages: CPU per message moves much less than throughput when other work shares the box. After each phase the
benchmark waits (at most --drain-seconds) for every acked message to arrive, and counts
missing and duplicate deliveries.

Bounded: each phase stops at its time or --max-messages, whichever comes first; every
wait has a timeout; the run stops by itself. The clients share the machine with the
servers, PostgreSQL and Redis: absolute numbers are the whole box's, compare variants.
Needs PostgreSQL at HUB_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres)
and Redis at HUB_BENCH_REDIS (default redis://127.0.0.1:6379/0).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.bench import cpu_seconds, free_port, spawn, stop

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("HUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HUB_BENCH_REDIS", "redis://127.0.0.1:6379/0")
VARIANTS = ("full", "no-sessions", "no-outbox")

# Appended to storage/outbox.py in the throwaway copy only (variant no-outbox).
NO_OUTBOX_PATCH = '''

# --- loadtests.recovery_bench, variant no-outbox (a throwaway copy, never the product) ---
import itertools as _itertools
import secrets as _secrets

_bench_ids = _itertools.count(_secrets.randbits(40) << 20)  # unique per process, as ids must be


async def add(tx, events):  # noqa: F811
    return [next(_bench_ids) for _ in events]


async def remove_published(tx, ids):  # noqa: F811
    return None
'''


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


# --- databases and Redis -------------------------------------------------------------

def sa_url(name: str) -> str:
    return PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def pg_value(name: str, sql: str):
    import asyncpg

    conn = await asyncpg.connect(PG_URL.rsplit("/", 1)[0] + "/" + name, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def redis_cleanup(prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        # Plain keys and hash-tagged ones (`{prefix:bus}:log:...`, hub/backends/redis.py).
        keys = list(client.scan_iter(f"{prefix}:*", count=1000)) + list(client.scan_iter("{" + f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


@dataclass
class Pair:
    sender_id: int
    sender_token: str
    recipient_id: int
    recipient_token: str


async def prepare(database_url: str, secret: str, pairs: int) -> list[Pair]:
    """Schema, accounts straight in the database (as `hub users create`), tokens
    minted with the secret (as `hub token issue`), and each pair's direct thread."""
    from hub.auth import Tokens, hash_password
    from storage import chat as chat_store
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    tokens = Tokens(secret, access_ttl=3600, refresh_ttl=3600, service_ttl=3600)
    db = Database(database_url)
    try:
        await upgrade(db.engine)
        pw = await hash_password(secrets.token_hex(8))
        run = secrets.token_hex(3)
        out = []
        async with db.transaction() as tx:
            for i in range(pairs):
                a = await users_store.create_user(tx, email=f"rbench{run}-s{i}@example.com", password_hash=pw,
                                                  first_name="Sender")
                b = await users_store.create_user(tx, email=f"rbench{run}-r{i}@example.com", password_hash=pw,
                                                  first_name="Recipient")
                await chat_store.get_or_create_direct(tx, a.id, b.id)
                out.append(Pair(a.id, tokens.access(a.id, "user").token, b.id, tokens.access(b.id, "user").token))
        return out
    finally:
        await db.close()


def throwaway_copy(tmp: Path) -> Path:
    """The code as it is now, in `tmp`, with the outbox's writes patched out."""
    dest = tmp / "no-outbox-copy"
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc")
    for pkg in ("handlers", "hub", "storage"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    (dest / "web").symlink_to(ROOT / "web")
    target = dest / "storage" / "outbox.py"
    target.write_text(target.read_text() + NO_OUTBOX_PATCH)
    return dest


# --- the load ---------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    acked: int = 0
    failed: int = 0
    ack: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    missing: int = 0
    duplicates: int = 0

    def summary(self) -> dict:
        return {
            "phase": self.name, "seconds": round(self.seconds, 2), "acked": self.acked, "failed": self.failed,
            "acked_per_s": round(self.acked / self.seconds, 1) if self.seconds else None,
            "ack_p50": quantile(self.ack, 0.5), "ack_p99": quantile(self.ack, 0.99),
            "e2e_p50": quantile(self.e2e, 0.5), "e2e_p99": quantile(self.e2e, 0.99),
            "missing": self.missing, "duplicates": self.duplicates,
        }


class Load:
    def __init__(self, pairs: list[Pair], url_a: str, url_b: str) -> None:
        self.pairs, self.url_a, self.url_b = pairs, url_a, url_b
        self.senders: list = []
        self.recipients: list = []
        self.phase: Phase | None = None
        self.sent_at: dict[tuple[int, int], float] = {}  # (sender, seq) -> send time, acked only
        self.got: dict[tuple[int, int], int] = {}
        self.seq = 0

    async def connect(self) -> None:
        import socketio

        for i, pair in enumerate(self.pairs):
            recipient = socketio.AsyncClient(reconnection=False)
            recipient.on("message:new", self._on_new, namespace="/chat")
            await recipient.connect(self.url_b, namespaces=["/chat"], auth={"token": pair.recipient_token},
                                    transports=["websocket"], wait_timeout=10)
            sender = socketio.AsyncClient(reconnection=False)
            await sender.connect(self.url_a, namespaces=["/chat"], auth={"token": pair.sender_token},
                                 transports=["websocket"], wait_timeout=10)
            self.recipients.append(recipient)
            self.senders.append(sender)

    async def close(self) -> None:
        for client in self.senders + self.recipients:
            try:
                await client.disconnect()
            except Exception:
                pass

    async def _on_new(self, data, *offset) -> None:
        now = time.perf_counter()
        try:
            _, sender, seq, stamp = data["content"].split("|")
            key = (int(sender), int(seq))
        except (KeyError, ValueError, AttributeError):
            return
        self.got[key] = self.got.get(key, 0) + 1
        if self.got[key] == 1 and self.phase is not None:
            self.phase.e2e.append(now - float(stamp))

    async def send(self, i: int) -> None:
        self.seq += 1
        seq = self.seq
        started = time.perf_counter()
        body = {"recipient_id": self.pairs[i].recipient_id, "message": f"bench|{i}|{seq}|{started:.6f}"}
        phase = self.phase
        try:
            reply = await self.senders[i].call("message:send", body, namespace="/chat", timeout=30)
        except Exception:
            phase.failed += 1
            return
        if not reply.get("ok"):
            phase.failed += 1
            return
        phase.ack.append(time.perf_counter() - started)
        phase.acked += 1
        self.sent_at[(i, seq)] = started

    async def drain(self, phase: Phase, seconds: float) -> None:
        """Wait for every acked message of the phase to arrive at its recipient."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(k not in self.got for k in self.sent_at):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # late duplicates would show here
        phase.missing = sum(1 for k in self.sent_at if k not in self.got)
        phase.duplicates = sum(n - 1 for n in self.got.values() if n > 1)
        self.sent_at.clear()
        self.got.clear()

    async def paced(self, rate: float, seconds: float, cap: int, drain: float) -> Phase:
        phase = self.phase = Phase("paced")
        tasks = []
        interval = 1.0 / rate
        started = time.perf_counter()
        n = 0
        while n < cap and time.perf_counter() - started < seconds:
            tasks.append(asyncio.create_task(self.send(n % len(self.senders))))
            n += 1
            delay = started + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        phase.seconds = time.perf_counter() - started
        await self.drain(phase, drain)
        self.phase = None
        return phase

    async def closed(self, seconds: float, cap: int, drain: float) -> Phase:
        phase = self.phase = Phase("closed")
        started = time.perf_counter()
        count = [0]

        async def loop(i: int) -> None:
            while count[0] < cap and time.perf_counter() - started < seconds:
                count[0] += 1
                await self.send(i)

        await asyncio.wait_for(asyncio.gather(*(loop(i) for i in range(len(self.senders)))), seconds + 60)
        phase.seconds = time.perf_counter() - started
        await self.drain(phase, drain)
        self.phase = None
        return phase


async def connects(pairs: list[Pair], url: str, count: int, in_flight: int) -> dict:
    """Connect `count` sockets to /chat (JWT check, personal room, and with recovery on
    a pid and a session record in Redis), `in_flight` at a time, then disconnect them."""
    import socketio

    times: list[float] = []
    clients = []
    failed = 0
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            client = socketio.AsyncClient(reconnection=False)
            t = time.perf_counter()
            try:
                await client.connect(url, namespaces=["/chat"], auth={"token": pairs[i % len(pairs)].sender_token},
                                     transports=["websocket"], wait_timeout=10)
            except Exception:
                failed += 1
                return
            times.append(time.perf_counter() - t)
            clients.append(client)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 120)
    seconds = time.perf_counter() - started
    for client in clients:
        try:
            await client.disconnect()
        except Exception:
            pass
    return {"phase": "connect", "connected": len(times), "failed": failed, "seconds": round(seconds, 2),
            "per_s": round(len(times) / seconds, 1) if seconds else None,
            "p50": quantile(times, 0.5), "p99": quantile(times, 0.99)}


async def drive(pairs: list[Pair], url_a: str, url_b: str, args, pids: list[int]) -> list[dict]:
    connect_phase = await connects(pairs, url_a, args.connects, 10) if args.connects else None
    load = Load(pairs, url_a, url_b)
    await load.connect()
    try:
        warm = Phase("warmup")
        load.phase = warm
        end = time.perf_counter() + args.warmup_seconds
        while time.perf_counter() < end:
            await asyncio.gather(*(load.send(i) for i in range(len(pairs))))
        await load.drain(warm, args.drain_seconds)
        paced = await load.paced(args.rate, args.paced_seconds, args.max_messages, args.drain_seconds)
        cpu = [cpu_seconds(pid) for pid in pids]
        closed = await load.closed(args.closed_seconds, args.max_messages, args.drain_seconds)
        used = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu)]
        summary = closed.summary()
        # Hub CPU per acked message (writer A, recipients' instance B), over the closed phase
        # and its drain: less sensitive than throughput to what else runs on the machine.
        summary["cpu_ms_a"] = round(used[0] * 1000 / closed.acked, 2) if closed.acked else None
        summary["cpu_ms_b"] = round(used[1] * 1000 / closed.acked, 2) if closed.acked else None
        return [paced.summary(), summary] + ([connect_phase] if connect_phase else [])
    finally:
        await load.close()


# --- one variant ---------------------------------------------------------------------

def run_variant(variant: str, args, tmp: Path, copy: Path | None) -> dict:
    name = f"hub_rbench_{secrets.token_hex(4)}"
    prefix = f"hubrbench:{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(40)
    work = tmp / f"{variant}-{secrets.token_hex(2)}"
    work.mkdir()
    env = {**os.environ, "HUB_DATABASE_URL": sa_url(name), "HUB_REDIS_URL": REDIS_URL, "HUB_REDIS_PREFIX": prefix,
           "HUB_JWT_SECRET": secret, "HUB_DATA_DIR": str(work / "data"), "HUB_LOG_LEVEL": "WARNING",
           # The per-connection event budget (20/s by default) would cap a closed-loop sender.
           "HUB_EVENT_RATE": "1000000", "HUB_EVENT_BURST": "1000000", "HUB_USER_OP_LIMIT": "1000000000",
           "HUB_MAX_CONNECTIONS_PER_ADDRESS": "0"}  # every client comes from 127.0.0.1
    cwd = ROOT
    if variant == "no-sessions":
        env["HUB_RECOVERY_WINDOW"] = "0"
    if variant == "no-outbox":
        cwd = copy
        env["PYTHONPATH"] = str(copy)  # the copy's packages, not the editable install's
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    load_before = os.getloadavg()[0]
    procs: list[subprocess.Popen] = []
    try:
        pairs = asyncio.run(prepare(sa_url(name), secret, args.senders))
        urls = []
        for i in range(2):
            port = free_port()
            procs.append(spawn([sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               port=port, ready="/ready", cwd=cwd, env=env, log=work / f"hub-{i}.log"))
            urls.append(f"http://127.0.0.1:{port}")
        phases = asyncio.run(drive(pairs, urls[0], urls[1], args, [p.pid for p in procs]))
        import redis
        client = redis.Redis.from_url(REDIS_URL)
        try:
            sessions = sum(1 for _ in client.scan_iter(f"{prefix}:session:*", count=1000))
            log_key = "{" + f"{prefix}:bus" + "}:log:/chat"
            log_entries, log_bytes = client.xlen(log_key), client.memory_usage(log_key)
        finally:
            client.close()
        for proc in procs:
            stop(proc)
        # Rows ever inserted (published ones are deleted): PostgreSQL's statistics,
        # which each backend flushed when the hubs' connections closed.
        outbox_rows = asyncio.run(pg_value(name, "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'outbox'"))
        # Events the relay appended because their writer had not within RELAY_AFTER
        # (hub/delivery/fanout.py, 0.5 s: a slow commit under load, or a failed append): a log
        # entry appended twice is dropped by the log, each event delivered once per instance.
        relayed = sum(int(m.group(1)) for i in range(2) for m in
                      re.finditer(r"relayed (\d+) outbox events", (work / f"hub-{i}.log").read_text()))
        return {"variant": variant, "phases": phases, "outbox_rows": outbox_rows, "session_records": sessions,
                "log_entries": log_entries, "log_bytes": log_bytes, "relayed": relayed,
                "loadavg": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    finally:
        for proc in procs:
            stop(proc)
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        redis_cleanup(prefix)
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


# --- the outbox's own statements, timed directly ---------------------------------------

async def _outbox_micro(database_url: str, n: int) -> dict:
    from handlers.context import Outgoing
    from sqlalchemy import insert, text
    from storage import outbox
    from storage.base import utcnow
    from storage.db import Database
    from storage.migrate import upgrade

    message = {"id": 1, "thread_id": 1, "sender_id": 1, "recipient_id": 2, "message": "x" * 64, "booking_id": None,
               "attachments": [], "is_read": False, "created_at": "2026-11-23T03:00:00.000000+00:00",
               "edited_at": None, "client_msg_id": None}
    new = {"message_id": 1, "thread_id": 1, "sender_id": 1, "content": "x" * 64,
           "timestamp": "2026-11-23T03:00:00.000000+00:00", "message": message}
    # The three durable events of one message:send to a direct thread.
    events = [Outgoing("/chat", "message:new", new, ["user:2"]),
              Outgoing("/chat", "message:sent", new, ["user:1"], skip_sid="abcdefghijklmnopqrst"),
              Outgoing("/chat", "thread:updated", {"thread_id": 1, "message_count": 1}, ["user:1", "user:2"])]
    db = Database(database_url)
    try:
        await upgrade(db.engine)
        async with db.transaction() as tx:  # a stand-in for the write itself, in this throwaway database
            await tx.execute(text("CREATE TABLE bench_write (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL, "
                                  "created_at TIMESTAMPTZ NOT NULL DEFAULT now())"))
        write = text("INSERT INTO bench_write (body) VALUES (:body)")
        body = {"body": "x" * 64}
        timings: dict[str, list[float]] = {"write": [], "outbox": [], "core": [], "remove": []}
        core = insert(outbox.OutboxEvent).returning(outbox.OutboxEvent.id)
        ids: list[int] = []
        for i in range(n):  # interleaved, so both see the same machine
            t = time.perf_counter()
            async with db.transaction() as tx:
                await tx.execute(write, body)
            timings["write"].append(time.perf_counter() - t)
            t = time.perf_counter()
            async with db.transaction() as tx:
                await tx.execute(write, body)
                ids += await outbox.add(tx, events)
            timings["outbox"].append(time.perf_counter() - t)
            # For comparison only: the same rows through one Core INSERT .. RETURNING
            # (storage.outbox.add sends them as arrays on PostgreSQL).
            t = time.perf_counter()
            async with db.transaction() as tx:
                await tx.execute(write, body)
                now = utcnow()
                rows = [{"namespace": e.namespace, "event": e.event, "data": e.data, "rooms": e.rooms,
                         "skip_sid": e.skip_sid, "created_at": now} for e in events]
                ids += list((await tx.execute(core, rows)).scalars())
            timings["core"].append(time.perf_counter() - t)
            if len(ids) >= 120:  # the remover's batch: what ~0.2 s of 200 writes/s publishes
                t = time.perf_counter()
                async with db.transaction() as tx:
                    await outbox.remove_published(tx, ids)
                timings["remove"].append((time.perf_counter() - t) / (len(ids) / 3))  # per write
                ids = []
        return {k: {"mean": statistics.fmean(v), "p50": quantile(v, 0.5), "p99": quantile(v, 0.99), "n": len(v)}
                for k, v in timings.items() if v}
    finally:
        await db.close()


def outbox_micro(n: int) -> dict:
    name = f"hub_rbench_{secrets.token_hex(4)}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        return asyncio.run(_outbox_micro(sa_url(name), n))
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# --- the report ------------------------------------------------------------------------

def median_of(runs: list[dict], phase: str, key: str):
    values = [p[key] for r in runs for p in r["phases"] if p["phase"] == phase and p.get(key) is not None]
    return statistics.median(values) if values else None


def report(results: dict[str, list[dict]], micro: dict | None, args) -> str:
    lines = [f"machine: {machine()}",
             f"load: {args.senders} senders on instance A -> {args.senders} recipients on instance B; "
             f"paced {args.rate:g} msg/s for {args.paced_seconds:g} s, closed loop for {args.closed_seconds:g} s; "
             f"{args.rounds} round(s), variants interleaved; medians over rounds", ""]
    lines.append("| variant | closed: acked msg/s | closed: ack p50 / p99 ms | closed: e2e p50 / p99 ms "
                 "| paced: ack p50 / p99 ms | paced: e2e p50 / p99 ms | lost | dup | outbox rows inserted | relayed | session records left |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for variant, runs in results.items():
        if not runs:
            continue
        lost = sum(p.get("missing", 0) for r in runs for p in r["phases"])
        dup = sum(p.get("duplicates", 0) for r in runs for p in r["phases"])
        failed = sum(p["failed"] for r in runs for p in r["phases"] if p["phase"] != "connect")
        rate = median_of(runs, "closed", "acked_per_s")
        lines.append(
            f"| {variant} | {rate:.0f} | {ms(median_of(runs, 'closed', 'ack_p50'))} / "
            f"{ms(median_of(runs, 'closed', 'ack_p99'))} | {ms(median_of(runs, 'closed', 'e2e_p50'))} / "
            f"{ms(median_of(runs, 'closed', 'e2e_p99'))} | {ms(median_of(runs, 'paced', 'ack_p50'))} / "
            f"{ms(median_of(runs, 'paced', 'ack_p99'))} | {ms(median_of(runs, 'paced', 'e2e_p50'))} / "
            f"{ms(median_of(runs, 'paced', 'e2e_p99'))} | {lost}{f' ({failed} failed)' if failed else ''} | {dup} "
            f"| {', '.join(str(r['outbox_rows']) for r in runs)} | {', '.join(str(r['relayed']) for r in runs)} "
            f"| {', '.join(str(r['session_records']) for r in runs)} |")
    lines += ["", "| variant | hub CPU per acked message, writer A / recipients' B (ms, closed phase) |", "| --- | --- |"]
    for variant, runs in results.items():
        if runs:
            a, b = median_of(runs, "closed", "cpu_ms_a"), median_of(runs, "closed", "cpu_ms_b")
            lines.append(f"| {variant} | {'-' if a is None else f'{a:.2f}'} / {'-' if b is None else f'{b:.2f}'} "
                         f"(rounds: " + ", ".join(f"{p.get('cpu_ms_a')}/{p.get('cpu_ms_b')}" for r in runs
                                                  for p in r["phases"] if p["phase"] == "closed") + ") |")
    lines += ["", "| variant | connects/s (10 in flight) | connect p50 / p99 ms | /chat log in Redis after the run |",
              "| --- | --- | --- | --- |"]
    for variant, runs in results.items():
        if runs:
            rate = median_of(runs, "connect", "per_s")
            lines.append(f"| {variant} | {'-' if rate is None else f'{rate:.0f}'} | "
                         f"{ms(median_of(runs, 'connect', 'p50'))} / {ms(median_of(runs, 'connect', 'p99'))} | "
                         + ", ".join(f"{r['log_entries']} entries, {r['log_bytes'] or 0} bytes" for r in runs) + " |")
    lines.append("")
    lines.append("per round, closed loop acked msg/s [1-minute load average of the machine before/after]:")
    for v, runs in results.items():
        if runs:
            lines.append(f"  {v}: " + ", ".join(
                f"{p['acked_per_s']} [{r['loadavg'][0]}/{r['loadavg'][1]}]"
                for r in runs for p in r["phases"] if p["phase"] == "closed"))
    base = [next(p["acked_per_s"] for p in r["phases"] if p["phase"] == "closed") for r in results.get("full", [])]
    if base:
        lines.append("paired with the full stack in the same round (median of the per-round ratios, "
                     "robust to the machine's load drifting between rounds):")
        for v, runs in results.items():
            if v != "full" and runs:
                ratios = [next(p["acked_per_s"] for p in r["phases"] if p["phase"] == "closed") / b
                          for r, b in zip(runs, base) if b]
                if ratios:
                    lines.append(f"  {v}: closed-loop throughput x{statistics.median(ratios):.2f} of full's "
                                 f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
    if micro:
        s, i = micro["write"], micro["outbox"]
        lines += ["", f"outbox statements, timed directly ({s['n']} transactions each, interleaved, one connection):",
                  f"  write transaction (one INSERT, commit):          mean {ms(s['mean'])} ms, p50 {ms(s['p50'])}, "
                  f"p99 {ms(s['p99'])}",
                  f"  the same + the outbox INSERT of 3 events:        mean {ms(i['mean'])} ms, p50 {ms(i['p50'])}, "
                  f"p99 {ms(i['p99'])}",
                  f"  -> the outbox adds about {ms(i['mean'] - s['mean'])} ms (mean), {ms(i['p50'] - s['p50'])} ms "
                  f"(p50) to each write's transaction"]
        if "core" in micro:
            c = micro["core"]
            lines.append(f"  for comparison, the same rows by one Core INSERT .. RETURNING: mean {ms(c['mean'])} ms, "
                         f"p50 {ms(c['p50'])}, p99 {ms(c['p99'])} (adds {ms(c['mean'] - s['mean'])} ms mean)")
        if "remove" in micro:
            m = micro["remove"]
            lines.append(f"  batched DELETE of published events (40 writes per batch), per write: mean {ms(m['mean'])} ms, "
                         f"off the request path")
    return "\n".join(lines)


def machine() -> str:
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.recovery_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants: " + ", ".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--senders", type=int, default=8)
    p.add_argument("--rate", type=float, default=20.0, help="paced phase: messages/s in total")
    p.add_argument("--connects", type=int, default=200, help="sockets connected in the connect phase (0: skip)")
    p.add_argument("--paced-seconds", type=float, default=6.0)
    p.add_argument("--closed-seconds", type=float, default=8.0)
    p.add_argument("--warmup-seconds", type=float, default=2.0)
    p.add_argument("--drain-seconds", type=float, default=10.0)
    p.add_argument("--max-messages", type=int, default=20000, help="per phase")
    p.add_argument("--micro", type=int, default=1000, help="transactions for the direct outbox timing (0: skip)")
    p.add_argument("--json", help="also write the raw results here")
    p.add_argument("--keep-logs", action="store_true")
    args = p.parse_args(argv)
    variants = [v for v in args.only.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {sorted(unknown)}")
    if not (1 <= args.rounds <= 10 and 1 <= args.senders <= 200 and 0 < args.rate <= 5000 and 0 <= args.connects <= 5000
            and max(args.paced_seconds, args.closed_seconds, args.warmup_seconds) <= 120):
        p.error("out of bounds: rounds 1..10, senders 1..200, rate <= 5000, phases <= 120 s")
    tmp = Path(tempfile.mkdtemp(prefix="recovery-bench-"))
    results: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        copy = throwaway_copy(tmp) if "no-outbox" in variants else None
        for rnd in range(args.rounds):
            for variant in variants:
                print(f"round {rnd + 1}/{args.rounds}: {variant} ...", file=sys.stderr, flush=True)
                result = run_variant(variant, args, tmp, copy)
                results[variant].append(result)
                print("  " + json.dumps(result), file=sys.stderr, flush=True)
        micro = outbox_micro(args.micro) if args.micro else None
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)
    for variant, runs in results.items():
        for r in runs:
            expect_rows = variant != "no-outbox"
            if bool(r["outbox_rows"]) != expect_rows:
                raise SystemExit(f"{variant}: outbox rows {r['outbox_rows']}: the variant did not run as intended")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "micro": micro, "machine": machine(),
                                               "args": vars(args)}, indent=1))
    print(report(results, micro, args))


if __name__ == "__main__":
    main()
