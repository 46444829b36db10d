"""What each instance reads from the Redis bus when the traffic is for rooms whose
members all sit on one of them (issue 24, part 1): 4 server instances on one Redis,
each with its own idle users connected to /notifications (raw websockets,
loadtests/node/crowd.mjs); events are published to users of the first instance
only, each to one `user:<id>` room. For each instance: the bytes its process read
(/proc/<pid>/io rchar: Redis, plus the clients' heartbeats and, on instance 1, the
publishing requests) and its CPU seconds over the traffic. Modes:

* hub-one: the hub with HUB_BUS_PER_ROOM=false, one channel every instance reads
  whole (as before); hub-rooms: a channel per room (the default). The hub stores
  each event (`POST /api/publish`, PostgreSQL, outbox, log); its own count of the
  bytes it read from the bus (`hub_bus_received_bytes_total`) is shown too.
* node-classic: Node's socket.io 4.8 with @socket.io/redis-adapter (one channel per
  namespace); node-sharded: its sharded adapter, "dynamic" subscriptions (a channel
  per room, Redis 7 sharded pub/sub). Events are volatile (`POST /publish-room`).

    .venv/bin/python -m loadtests.bus_rooms --instances 4 --clients 500 --rate 400 --seconds 10

Bounded: every phase has a deadline.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.bench import (NODE_DIR, HubServers, NodeServers, cpu_seconds, platform_line, proc_value,
                             throwaway_pg)
from loadtests.crowd import NS, EVENT, close, pct, raise_fd_limit, tokens_for

# mode -> (hub?, environment of its processes)
MODES = {"hub-one": (True, {"HUB_BUS_PER_ROOM": "false"}), "hub-rooms": (True, {"HUB_BUS_PER_ROOM": "true"}),
         "node-classic": (False, {}), "node-sharded": (False, {"BENCH_ADAPTER": "sharded"})}


def read_bytes(pid: int) -> int:
    return proc_value(pid, "io", "rchar:")


def bus_bytes(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(r"^hub_bus_received_bytes_total (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def connect_clients(servers, per: int, run: int, deadline: float):
    """`per` users on each instance, users i*per+1 .. (i+1)*per on instance i."""
    tokens = tokens_for(servers.secret, per * len(servers.urls))
    procs = []
    for i, url in enumerate(servers.urls):
        job = {"url": url, "ns": NS, "clients": per, "addresses": [f"127.{run}.{i + 1}.1"], "concurrency": 100,
               "event": EVENT, "deadline_s": deadline}
        proc = subprocess.Popen(["node", str(NODE_DIR / "crowd.mjs"), json.dumps(job)], cwd=NODE_DIR,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc.stdin.write(json.dumps(tokens[i * per:(i + 1) * per]) + "\n")
        proc.stdin.flush()
        procs.append(proc)
    connected = [json.loads(proc.stdout.readline()) for proc in procs]
    failed = sum(c.get("failed", 0) for c in connected)
    if failed:
        print(f"  {failed} connections failed: {connected[0].get('error')}", file=sys.stderr)
    return procs


def traffic(servers, users: list[int], rate: int, seconds: float) -> int:
    """`rate` events a second for `seconds` to random users of `users`, each one
    user's room, from a few keep-alive connections; returns how many were sent."""
    if isinstance(servers, HubServers):
        from hub.auth import Tokens

        token = Tokens(servers.secret, access_ttl=600, refresh_ttl=60, service_ttl=600).service("bench").token
        path = "/api/publish"
        body = lambda room, data: {"namespace": NS, "event": EVENT, "to": {"room": room}, "data": data}  # noqa: E731
    else:
        token, path = servers.secret, "/publish-room"
        body = lambda room, data: {"room": room, "event": EVENT, "data": data}  # noqa: E731
    where = urlsplit(servers.urls[0])
    local = threading.local()
    total = int(rate * seconds)
    started = time.monotonic()

    def send(index: int) -> None:
        delay = started + index / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = HTTPConnection(where.hostname, where.port, timeout=30,
                                               source_address=("127.0.0.2", 0))
        data = {"alert_id": index, "severity": "info", "message": f"{time.time() * 1000:.3f}"}
        conn.request("POST", path, json.dumps(body(f"user:{random.choice(users)}", data)),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(total)))
    return total


def measure(mode: str, args, tmp: Path, run: int) -> list[dict]:
    hub, env = MODES[mode]
    (tmp / mode).mkdir()
    with contextlib.ExitStack() as stack:
        if hub:
            servers = HubServers(tmp / mode, instances=args.instances, redis=True, extra_env=env,
                                 database_url=stack.enter_context(throwaway_pg()))
        else:
            servers = NodeServers(tmp / mode, instances=args.instances, redis=True, extra_env=env)
        servers.start()
        procs = []
        try:
            procs = connect_clients(servers, args.clients, run, args.deadline)
            time.sleep(2)
            pids = [p.pid for p in servers.procs]
            bus0 = [bus_bytes(u) for u in servers.urls] if hub else None
            read0, cpu0 = [read_bytes(p) for p in pids], [cpu_seconds(p) for p in pids]
            sent = traffic(servers, list(range(1, args.clients + 1)), args.rate, args.seconds)
            time.sleep(2)  # the last deliveries
            cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
            read = [read_bytes(p) - r for p, r in zip(pids, read0)]
            bus = [bus_bytes(u) - b for u, b in zip(servers.urls, bus0)] if hub else [None] * len(pids)
            procs[0].stdin.write("report\n")
            procs[0].stdin.flush()
            latencies = sorted(x for row in json.loads(procs[0].stdout.readline())["latencies"] if row
                               for x in row)
            return [{"mode": mode, "instance": i + 1, "members": i == 0, "sent": sent, "received": len(latencies),
                     "p99": pct(latencies, 99), "read": read[i], "bus": bus[i], "cpu": cpu[i]}
                    for i in range(len(pids))]
        finally:
            close(procs)
            servers.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bus_rooms", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=4)
    p.add_argument("--clients", type=int, default=500, help="connected users per instance")
    p.add_argument("--rate", type=int, default=200, help="events a second, to users of the first instance")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    p.add_argument("--deadline", type=float, default=300.0)
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "ws").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    raise_fd_limit()
    print(platform_line())
    print(f"{args.instances} instances x {args.clients} users on {NS}; {args.rate} events/s for {args.seconds:g} s, "
          f"each to one user of instance 1\n")
    print("| server, bus | instance | its users get the events | delivered (p99 ms) | read by the process | "
          "per event | of it from the bus (hub's count) | CPU s | CPU ms per event |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    tmp = Path(tempfile.mkdtemp(prefix="hub-bus-rooms-"))
    run = secrets.randbelow(200) + 1
    for n, mode in enumerate(args.modes.split(",")):
        for row in measure(mode, args, tmp, (run + n) % 250 + 1):
            delivered = f"{row['received']}/{row['sent']} ({row['p99']})" if row["members"] else "-"
            bus = "-" if row["bus"] is None else f"{row['bus'] / 1024:,.0f} KiB"
            print(f"| {mode} | {row['instance']} | {'yes' if row['members'] else 'no'} | {delivered} | "
                  f"{row['read'] / 1024:,.0f} KiB | {row['read'] / row['sent']:,.0f} B | {bus} | {row['cpu']:.2f} | "
                  f"{row['cpu'] * 1000 / row['sent']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
