"""Persisted fan-out against Node's volatile one (issue 24, part 4): a group thread
whose --members members hold --sockets-per-member sockets each (official
socket.io-client, websocket), and one more member sending `message:send` at each
step's rate. The hub stores every message (PostgreSQL, a throwaway database; the
outbox, the log) and delivers `message:new` and `thread:updated` to every member's
sockets; Node's socket.io 4.8 peer broadcasts the same two events, with the same
payloads, to the thread's room without storing anything (no offsets), or only
`message:new` (`node-one`). Each step reports deliveries/s and the delivery latency
(send -> each receiver), the servers back to back.

    .venv/bin/python -m loadtests.group_fanout                         # 10 x 50 sockets, 100..500 msg/s
    .venv/bin/python -m loadtests.group_fanout --rates 400 --step-seconds 5 --servers hub
    .venv/bin/python -m loadtests.group_fanout --receiver-threads 2  # the sockets read on 2 cores

Bounded: each step lasts --step-seconds, each drain at most --drain-seconds, each
generator run at most --deadline seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from loadtests.bench import (NODE_DIR, HubServers, NodeServers, fmt, platform_line, run_generator, summarize,
                             throwaway_pg)


async def _hub_group(env: dict, members: int) -> tuple[int, list[str], str]:
    """Accounts and one group thread straight in the database, tokens minted with
    the secret (as loadtests.bench's users): (thread id, member tokens, sender token)."""
    from hub.auth import Tokens, hash_password
    from storage import chat as chat_store
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    tokens = Tokens(env["HUB_JWT_SECRET"], access_ttl=24 * 3600, refresh_ttl=3600, service_ttl=3600)
    db = Database(env["HUB_DATABASE_URL"])
    try:
        await upgrade(db.engine)
        pw = await hash_password(secrets.token_hex(8))
        run = secrets.token_hex(3)
        async with db.transaction() as tx:
            made = [await users_store.create_user(tx, email=f"group{run}-{i}@example.com", password_hash=pw,
                                                  first_name="Group") for i in range(members + 1)]
            thread = await chat_store.create_group(tx, made[-1].id, [u.id for u in made], "bench")
        tok = [tokens.access(u.id, "user").token for u in made]
        return thread.id, tok[:-1], tok[-1]
    finally:
        await db.close()


def run(servers, args) -> dict:
    if isinstance(servers, HubServers):
        thread_id, member_tokens, sender_token = asyncio.run(_hub_group(servers.env, args.members))
    else:
        users = servers.setup()  # Node's peer takes the thread from the handshake: any ids do
        thread_id, member_tokens, sender_token = 1, [users.receiver_token] * args.members, users.sender_token
    servers.start()
    try:
        job = {"mode": "group", "urls": servers.urls, "member_tokens": member_tokens,
               "sockets_per_member": args.sockets_per_member, "thread_id": thread_id, "sender_token": sender_token,
               "rates": [int(r) for r in args.rates.split(",")], "step_s": args.step_seconds,
               "drain_s": args.drain_seconds, "p99_ms": 100, "deadline_s": args.deadline,
               "receiver_threads": args.receiver_threads}
        return summarize(run_generator(job, servers, args.deadline + 30), "deliveries_per_s")
    finally:
        servers.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.group_fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--sockets-per-member", type=int, default=50)
    p.add_argument("--rates", default="100,200,300,400,500", help="message:send/s of each step")
    p.add_argument("--servers", default="node,hub", help="node, node-one (message:new only), hub")
    p.add_argument("--receiver-threads", type=int, default=1,
                   help="worker threads of the generator reading the members' sockets")
    p.add_argument("--step-seconds", type=float, default=5.0)
    p.add_argument("--drain-seconds", type=float, default=10.0)
    p.add_argument("--deadline", type=float, default=180.0)
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "socket.io").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    print(platform_line())
    print(f"group of {args.members} members x {args.sockets_per_member} sockets; message:send at "
          f"{args.rates}/s\n", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="hub-group-"))
    results = {}
    for name in args.servers.split(","):
        d = tmp / name
        d.mkdir()
        if name in ("node", "node-one"):  # node-one: message:new only, as the issue measured Node
            results[name] = run(NodeServers(d, extra_env={"BENCH_GROUP_ONE_EVENT": str(int(name == "node-one"))}),
                                args)
        else:
            with throwaway_pg() as url:
                results[name] = run(HubServers(d, database_url=url), args)
    print("\n| server | message:send/s | deliveries/s | p50 / p99 / max ms | server CPU per delivery | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, res in results.items():
        for s in res["steps"]:
            verdict = "sustained" if s["sustained"] else "p99 over 100 ms" if s.get("delivered") else "NOT delivered"
            print(f"| {name} | {s['target']} | {s['deliveries_per_s']:,.0f} | {fmt(s['p50'])} / {fmt(s['p99'])} / "
                  f"{fmt(s['max'])} | {fmt(s.get('cpu_us_per_item'))} us | {verdict} |")


if __name__ == "__main__":
    main()
