"""Live state benchmarks (issue 22): live resources and users' presence.

    .venv/bin/python -m loadtests.live_state resources [--resources 1000] [--rate 10] [--watchers 5000]
    .venv/bin/python -m loadtests.live_state presence [--users 10000] [--partners 5] [--changes 1000]

resources: one `hub serve` (SQLite in a temporary folder, or PostgreSQL with --pg) and
loadtests/node/resources.mjs (official socket.io-client): a service socket declares
R tasks, W watcher sockets each watch one (W/R per resource), then the service
updates every task `--rate` times a second (progress, acked) for --seconds. Reports
the update rate kept, deliveries per second (received / what an uncoalesced fan-out
would send), delivery latency (service send -> watcher receive; coalesced updates
count from the newest update's send), the hub's CPU seconds per second.

presence: in-process, on Redis (HUB_BENCH_REDIS, a prefix of its own, deleted after)
and an SQLite database: N users online (one console each), each in a group thread
with --partners others; then --changes of them go away at once and one batch
announces it (`handlers.user_presence.announce`). Reports, per change, the events
and target rooms emitted and the time the batch took: bounded by the partners, not
by the users online.

Bounded: the Node run has a deadline; the presence run does a fixed amount of work.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

from loadtests import bench


async def _accounts(env: dict) -> tuple[int, str, str]:
    """An owner, a staff account watching for everyone, tokens as `hub token issue` makes them."""
    from hub.auth import Tokens
    from hub.settings import Settings
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    settings = Settings.from_env(env)
    if settings.sqlite_path:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    tokens = Tokens(env["HUB_JWT_SECRET"], access_ttl=24 * 3600, refresh_ttl=3600, service_ttl=24 * 3600)
    db = Database(settings.database_url)
    try:
        await upgrade(db.engine)
        run = secrets.token_hex(3)
        async with db.transaction() as tx:
            owner = await users_store.create_user(tx, email=f"owner{run}@example.com", password_hash="!")
            staff = await users_store.create_user(tx, email=f"staff{run}@example.com", password_hash="!",
                                                  role="admin")
        return owner.id, tokens.access(staff.id, "admin").token, tokens.service("bench").token
    finally:
        await db.close()


def resources(args) -> None:
    if args.pg:
        with bench.throwaway_pg() as url:
            return _resources(args, url)
    return _resources(args, None)


def _resources(args, database_url: str | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="hub-live-"))
    servers = bench.HubServers(tmp, database_url=database_url)
    owner_id, watcher_token, service_token = asyncio.run(_accounts(servers.env))
    servers.start()
    try:
        job = {"url": servers.urls[0], "service_token": service_token, "watcher_token": watcher_token,
               "owner_id": owner_id, "resources": args.resources, "rate": args.rate, "watchers": args.watchers,
               "seconds": args.seconds, "drain_s": 2, "deadline_s": args.deadline, "run": secrets.token_hex(3)}
        proc = subprocess.Popen(["node", str(bench.NODE_DIR / "resources.mjs"), json.dumps(job)],
                                cwd=bench.NODE_DIR, stdout=subprocess.PIPE, text=True)
        pid = servers.procs[0].pid
        cpu = None
        result = None
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["phase"] == "connected":
                cpu, started = bench.cpu_seconds(pid), time.monotonic()
            elif msg["phase"] == "done":
                result = msg
                if cpu is not None:
                    used = bench.cpu_seconds(pid) - cpu
                    result["hub_cpu_per_s"] = used / (time.monotonic() - started)
                    # What survives a machine shared with other work: CPU per update.
                    updates = result["updates_per_s"] * result["seconds"]
                    result["hub_cpu_ms_per_update"] = 1000 * used / updates if updates else None
        proc.wait(30)
    finally:
        servers.stop()
    print(f"machine: {os.cpu_count()} cores, {bench.platform_line()}")
    print(json.dumps(result, indent=1))


async def _presence(args) -> dict:
    from handlers.context import Context
    from handlers.user_presence import announce
    from hub.jobs import SYSTEM
    from hub.backends.presence import FORGET_AFTER
    from hub.backends.presence.redis import RedisPresence
    from hub.settings import Settings
    from storage import chat as chat_store
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    folder = tempfile.mkdtemp(prefix="hub-presence-")
    settings = Settings.from_env({"HUB_DATA_DIR": folder, "HUB_JWT_SECRET": secrets.token_urlsafe(40)})
    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    prefix = f"bench-{secrets.token_hex(4)}"
    presence = RedisPresence.from_url(bench.REDIS_URL, prefix, timeout=FORGET_AFTER, grace=0, instance_id="bench")
    try:
        await upgrade(db.engine)
        ids: list[int] = []
        async with db.transaction() as tx:
            for i in range(args.users):
                ids.append((await users_store.create_user(tx, email=f"p{prefix}-{i}@example.com",
                                                          password_hash="!")).id)
            group = args.partners + 1
            for i in range(0, len(ids) - group + 1, group):
                await chat_store.create_group(tx, ids[i], ids[i + 1:i + group], None)
        ctx = lambda: Context(actor=SYSTEM, db=db, settings=settings, user_presence=presence)  # noqa: E731
        for i in range(0, len(ids), 500):
            await asyncio.gather(*(presence.connect(u, f"bench:s{u}") for u in ids[i:i + 500]))
        await presence.look_at(ids, time.time())
        online = ctx()
        started = time.perf_counter()
        while await presence.redis.zcard("{" + f"{prefix}:presence" + "}:due"):
            await announce(online)
        connect_batch = time.perf_counter() - started
        gone = ids[:: max(1, len(ids) // args.changes)][:args.changes]
        await asyncio.gather(*(presence.disconnect(u, f"bench:s{u}") for u in gone))
        await presence.look_at(gone, time.time())
        changes = ctx()
        started = time.perf_counter()
        await announce(changes)
        batch = time.perf_counter() - started
        rooms = sum(len(e.rooms) for e in changes.events)
        return {"users_online": len(ids), "partners_each": args.partners, "changes": len(gone),
                "connect_announcements": len(online.events), "connect_batch_s": round(connect_batch, 3),
                "events_emitted": len(changes.events), "target_rooms": rooms,
                "rooms_per_change": rooms / max(1, len(gone)), "batch_s": round(batch, 3),
                "ms_per_change": round(1000 * batch / max(1, len(gone)), 3)}
    finally:
        keys = [k async for k in presence.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await presence.redis.delete(*keys)
        await presence.close()
        await db.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.live_state", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("resources")
    r.add_argument("--resources", type=int, default=1000)
    r.add_argument("--rate", type=float, default=10.0, help="updates per resource and second")
    r.add_argument("--watchers", type=int, default=5000)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument("--deadline", type=float, default=180.0)
    r.add_argument("--pg", action="store_true", help="PostgreSQL (a throwaway database at HUB_BENCH_PG)")
    q = sub.add_parser("presence")
    q.add_argument("--users", type=int, default=10_000)
    q.add_argument("--partners", type=int, default=5)
    q.add_argument("--changes", type=int, default=1000)
    args = p.parse_args(argv)
    if args.what == "resources":
        resources(args)
    else:
        print(f"machine: {os.cpu_count()} cores, {bench.platform_line()}")
        print(json.dumps(asyncio.run(_presence(args)), indent=1))


if __name__ == "__main__":
    main()
