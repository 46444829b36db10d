"""What each instance reads from the Redis bus when the traffic is for rooms whose
members all sit on one of them (issue 24, part 1): 4 hub instances on one Redis and
one PostgreSQL, each with its own idle users connected to /notifications (raw
websockets, loadtests/node/crowd.mjs); a service publishes to users of the first
instance only (`POST /api/publish`, durable, to `user:<id>`). For each instance: the
bytes it read from Redis (`hub_bus_received_bytes_total`) and its CPU seconds over
the traffic, with the bus on one channel every instance reads whole
(HUB_BUS_PER_ROOM=false, as before) and on a channel per room (the default).

    .venv/bin/python -m loadtests.bus_rooms --instances 4 --clients 500 --rate 200 --seconds 10

Bounded: every phase has a deadline.
"""
from __future__ import annotations

import argparse
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

from loadtests.bench import NODE_DIR, HubServers, cpu_seconds, platform_line, throwaway_pg
from loadtests.crowd import NS, EVENT, close, pct, raise_fd_limit, tokens_for

MODES = {"one": "false", "rooms": "true"}


def bus_bytes(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    found = re.search(r"^hub_bus_received_bytes_total (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else 0


def connect_clients(servers: HubServers, per: int, run: int, deadline: float):
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


def traffic(servers: HubServers, users: list[int], rate: int, seconds: float) -> int:
    """`rate` events a second for `seconds` to random users of `users`, each one
    user's room, from a few keep-alive connections; returns how many were sent."""
    from hub.auth import Tokens

    token = Tokens(servers.secret, access_ttl=600, refresh_ttl=60, service_ttl=600).service("bench").token
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
        body = {"namespace": NS, "event": EVENT, "to": {"room": f"user:{random.choice(users)}"},
                "data": {"alert_id": index, "severity": "info", "message": f"{time.time() * 1000:.3f}"}}
        conn.request("POST", "/api/publish", json.dumps(body),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(total)))
    return total


def measure(mode: str, args, tmp: Path, run: int) -> list[dict]:
    (tmp / mode).mkdir()
    with throwaway_pg() as url:
        servers = HubServers(tmp / mode, instances=args.instances, database_url=url, redis=True,
                             extra_env={"HUB_BUS_PER_ROOM": MODES[mode]})
        servers.start()
        procs = []
        try:
            procs = connect_clients(servers, args.clients, run, args.deadline)
            time.sleep(2)
            pids = [p.pid for p in servers.procs]
            bytes0 = [bus_bytes(u) for u in servers.urls]
            cpu0 = [cpu_seconds(p) for p in pids]
            sent = traffic(servers, list(range(1, args.clients + 1)), args.rate, args.seconds)
            time.sleep(2)  # the last deliveries
            cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
            read = [bus_bytes(u) - b for u, b in zip(servers.urls, bytes0)]
            procs[0].stdin.write("report\n")
            procs[0].stdin.flush()
            latencies = sorted(x for row in json.loads(procs[0].stdout.readline())["latencies"] if row
                               for x in row)
            return [{"mode": mode, "instance": i + 1, "members": i == 0, "sent": sent, "received": len(latencies),
                     "p99": pct(latencies, 99), "bytes": read[i], "cpu": cpu[i]} for i in range(len(pids))]
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
    p.add_argument("--modes", default="one,rooms")
    p.add_argument("--deadline", type=float, default=300.0)
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "ws").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    raise_fd_limit()
    print(platform_line())
    print(f"{args.instances} instances x {args.clients} users on {NS}; {args.rate} events/s for {args.seconds:g} s, "
          f"each to one user of instance 1\n")
    print("| bus | instance | its users get the events | delivered (p99 ms) | read from Redis | "
          "per event | CPU s | CPU ms per event |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    tmp = Path(tempfile.mkdtemp(prefix="hub-bus-rooms-"))
    run = secrets.randbelow(200) + 1
    for n, mode in enumerate(args.modes.split(",")):
        for row in measure(mode, args, tmp, (run + n) % 250 + 1):
            delivered = f"{row['received']}/{row['sent']} ({row['p99']})" if row["members"] else "-"
            print(f"| {'one channel' if mode == 'one' else 'per room'} | {row['instance']} | "
                  f"{'yes' if row['members'] else 'no'} | {delivered} | {row['bytes'] / 1024:,.0f} KiB | "
                  f"{row['bytes'] / row['sent']:,.0f} B | {row['cpu']:.2f} | {row['cpu'] * 1000 / row['sent']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
