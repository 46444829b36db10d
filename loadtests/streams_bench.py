"""Streamed bot replies under load: --streams concurrent bot streams, each sending
--rate deltas a second to its own dialog, on one `hub serve` instance; reports the
delta latency (bot send -> visitor receive: p50, p99, max), deltas sent and received
(a slow visitor gets several as one: coalesced), and the hub's CPU.

    .venv/bin/python -m loadtests.streams_bench                      # 200 x 30/s for 10 s
    .venv/bin/python -m loadtests.streams_bench --streams 50 --seconds 5

The instance runs on a PostgreSQL database of its own (created, then dropped) and a
Redis key prefix of its own (the in-flight buffer lives there; its keys are deleted
afterwards). Clients: one Node process (loadtests/node/streams.mjs, the official
socket.io-client; `npm ci --prefix loadtests/node`): --bot-sockets bot connections
share the streams, one visitor connection per dialog. The per-connection and
per-token budgets are raised: a bot streaming many replies at once on one socket
is far above the defaults (docs/live-state.md). The clients share the machine with
the server, PostgreSQL and Redis: absolute numbers are the whole box's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtests.bench import cpu_seconds, free_port, spawn, stop
from loadtests.recovery_bench import REDIS_URL, machine, pg_admin, redis_cleanup, sa_url

ROOT = Path(__file__).resolve().parent.parent
LOADGEN = ROOT / "loadtests" / "node" / "streams.mjs"


async def prepare(database_url: str, secret: str, dialogs: int) -> tuple[str, list[dict]]:
    """Schema, an owner, an assistant and its dialogs straight in the database; the
    bot's token and each visitor's, minted with the secret (as the hub does)."""
    from hub.auth import Tokens
    from storage import dialogs as dialog_store
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    tokens = Tokens(secret, access_ttl=3600, refresh_ttl=3600, service_ttl=3600)
    db = Database(database_url)
    try:
        await upgrade(db.engine)
        async with db.transaction() as tx:
            owner = await users_store.create_user(tx, email=f"sbench{secrets.token_hex(3)}@example.com",
                                                  password_hash="!")
            a = await dialog_store.create_assistant(tx, owner_id=owner.id, name="bench", allowed_origins=[],
                                                    system_prompt=None)
            visitors = []
            for i in range(dialogs):
                vid = f"vbench{i}"
                d = await dialog_store.create_dialog(tx, assistant_id=a.id, visitor_id=vid)
                visitors.append({"dialog_id": d.id, "token": tokens.visitor(d.id, a.id, vid, 3600).token})
        return tokens.service("bench-bot", a.id).token, visitors
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=30.0, help="deltas a second per stream")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bot-sockets", type=int, default=10)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if not (ROOT / "loadtests" / "node" / "node_modules" / "socket.io-client").exists():
        sys.exit("npm ci --prefix loadtests/node first")
    name, prefix = f"hub_sbench_{secrets.token_hex(4)}", f"hubsbench:{secrets.token_hex(4)}"
    secret = secrets.token_urlsafe(40)
    work = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    env = {**os.environ, "HUB_DATABASE_URL": sa_url(name), "HUB_REDIS_URL": REDIS_URL, "HUB_REDIS_PREFIX": prefix,
           "HUB_JWT_SECRET": secret, "HUB_DATA_DIR": str(work / "data"), "HUB_LOG_LEVEL": "WARNING",
           "HUB_EVENT_RATE": "1000000", "HUB_EVENT_BURST": "1000000", "HUB_USER_OP_LIMIT": "1000000000",
           "HUB_MAX_CONNECTIONS_PER_ADDRESS": "0", "HUB_STREAM_MAX_CHARS": "1000000",
           "HUB_MAX_MESSAGE_CHARS": "1000000"}  # each delta's text is a timestamp: ~15 characters
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    proc = None
    load_before = os.getloadavg()[0]
    try:
        bot_token, visitors = asyncio.run(prepare(sa_url(name), secret, args.streams))
        port = free_port()
        proc = spawn([sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                     port=port, ready="/ready", cwd=ROOT, env=env, log=work / "hub.log")
        job = {"url": f"http://127.0.0.1:{port}", "bot_token": bot_token, "bot_sockets": args.bot_sockets,
               "visitors": visitors, "rate": args.rate, "seconds": args.seconds,
               "deadline_s": args.seconds + 90}
        cpu_before = cpu_seconds(proc.pid)
        out = subprocess.run(["node", str(LOADGEN), json.dumps(job)], capture_output=True, text=True,
                             timeout=args.seconds + 120, cwd=LOADGEN.parent)
        if out.returncode != 0:
            sys.exit(f"load generator failed ({out.returncode}): {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["hub_cpu_s"] = round(cpu_seconds(proc.pid) - cpu_before, 1)
        result["loadavg"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        result["machine"] = machine()
        print(json.dumps(result, indent=2))
    finally:
        stop(proc)
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        redis_cleanup(prefix)
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
