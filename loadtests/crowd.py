"""A crowd of idle connections, and one event to all of them: N authenticated
connections to /notifications (one user each; raw websockets speaking the protocol,
loadtests/node/crowd.mjs, several generator processes on their own loopback source
addresses), then a few broadcasts to everyone in the namespace (the hub: `POST
/api/publish` with `to: {everyone: true}`, as a service would send a maintenance
notice; Node's socket.io: `io.of("/notifications").emit`). For each server, back to
back: the connect+auth rate, server CPU per connection set up, server RSS growth per
connection, each broadcast's delivery latency (send -> arrival, every receiver), and
the server CPU per connection when all of them drop at once.

    .venv/bin/python -m loadtests.crowd --clients 19000 --servers node,hub

Every process here can hold at most its hard RLIMIT_NOFILE of descriptors; the
benchmark raises the soft limit to it (never the hub's defaults) and uses one
generator per --per-generator connections. Bounded: every phase has a deadline.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

from loadtests.bench import NODE_DIR, HubServers, NodeServers, cpu_seconds, fmt, platform_line, rss_kib

NS, EVENT = "/notifications", "alert:triggered"
# --servers: the hub on its embedded default, or on Redis with the bus's channel per
# room (its default there) or one channel for all (HUB_BUS_PER_ROOM=false).
HUB_KINDS = {"hub": {}, "hub-redis": {"redis": True},
             "hub-redis-one": {"redis": True, "extra_env": {"HUB_BUS_PER_ROOM": "false"}}}
PUBLISHER = "127.0.0.2"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def tokens_for(secret: str, count: int) -> list[str]:
    """An access token per simulated user (ids 1..count), signed as the hub signs them;
    Node's peer checks the same signature and takes the same `sub`."""
    from hub.auth import Tokens

    tokens = Tokens(secret, access_ttl=24 * 3600, refresh_ttl=3600, service_ttl=3600)
    return [tokens.access(uid, "user").token for uid in range(1, count + 1)]


def publish(servers, index: int) -> float:
    """One event to everyone in /notifications; returns when it was sent (epoch ms)."""
    sent = time.time() * 1000
    data = {"alert_id": index, "severity": "info", "message": f"{sent:.3f}"}
    if isinstance(servers, HubServers):
        from hub.auth import Tokens

        token = Tokens(servers.secret, access_ttl=60, refresh_ttl=60, service_ttl=60).service("crowd").token
        url, body = servers.urls[0] + "/api/publish", {"namespace": NS, "event": EVENT, "to": {"everyone": True},
                                                         "data": data}
    else:
        token, url, body = servers.secret, servers.urls[0] + "/publish-everyone", data
    # From an address of its own: the generators' bound ports leave a connect() from
    # 127.0.0.1 none to pick (the kernel skips every port bound on any address).
    where = urlsplit(url)
    conn = HTTPConnection(where.hostname, where.port, timeout=60, source_address=(PUBLISHER, 0))
    try:
        conn.request("POST", where.path, json.dumps(body),
                     {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, (resp.status, resp.read())
    finally:
        conn.close()
    return sent


def generators(servers, tokens: list[str], per: int, run: int, deadline: float) -> list[subprocess.Popen]:
    count = math.ceil(len(tokens) / per)
    procs = []
    for g in range(count):
        mine = tokens[g * per:(g + 1) * per]
        # Each address has ~28k ephemeral ports toward one server port: one or two
        # addresses of its own per generator and per server run (an earlier run's
        # ports wait in TIME_WAIT on its addresses for a minute).
        addresses = [f"127.{run}.{g + 1}.{a + 1}" for a in range(math.ceil(len(mine) / 20000))]
        job = {"url": servers.urls[0], "ns": NS, "clients": len(mine), "addresses": addresses, "concurrency": 200,
               "event": EVENT, "deadline_s": deadline}
        # The tokens go on stdin's first line, not in argv (too long for it, and visible).
        proc = subprocess.Popen(["node", str(NODE_DIR / "crowd.mjs"), json.dumps(job)],
                                cwd=NODE_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        proc.tokens = mine
        procs.append(proc)
    return procs


def measure(servers, clients: int, per: int, run: int, broadcasts: int, deadline: float) -> dict:
    servers.start()
    procs: list[subprocess.Popen] = []
    try:
        pid = servers.procs[0].pid
        time.sleep(1)
        base_rss, base_cpu = rss_kib(pid), cpu_seconds(pid)
        started = time.monotonic()
        procs = generators(servers, tokens_for(servers.secret, clients), per, run, deadline)
        for proc in procs:
            proc.stdin.write(json.dumps(proc.tokens) + "\n")
            proc.stdin.flush()
        connected = [json.loads(proc.stdout.readline()) for proc in procs]
        seconds = time.monotonic() - started
        setup_cpu = cpu_seconds(pid) - base_cpu
        total = sum(c.get("clients", 0) for c in connected)
        errors = {c["error"] for c in connected if c.get("error")}
        if errors:
            print(f"  {servers.name}: connections failed: {'; '.join(sorted(errors))}", file=sys.stderr)
        time.sleep(3)  # let the server settle before reading RSS (as loadtests.bench)
        rss = rss_kib(pid)
        rows = []
        for b in range(broadcasts):
            cpu0 = cpu_seconds(pid)
            sent = publish(servers, b)
            time.sleep(3 if total < 50000 else 6)
            rows.append({"sent": sent, "cpu": cpu_seconds(pid) - cpu0})
        for proc in procs:
            proc.stdin.write("report\n")
            proc.stdin.flush()
        reports = [json.loads(proc.stdout.readline()) for proc in procs]
        for b, row in enumerate(rows):
            lat = sorted(x for r in reports for x in (r["latencies"][b] if b < len(r["latencies"]) else []) or [])
            row.update(received=len(lat), p50=pct(lat, 50), p99=pct(lat, 99), max=lat[-1] if lat else None)
        # Everyone leaves at once (a network blip, a proxy restart): the server's CPU
        # until it is idle again, per connection.
        cpu0 = cpu_seconds(pid)
        close(procs)
        disconnect_cpu = until_idle(pid, deadline) - cpu0
        return {"cpu_us_per_disconnect": disconnect_cpu * 1e6 / max(1, total),"clients": total, "failed": sum(c.get("failed", 0) for c in connected), "seconds": seconds,
                "rate": total / seconds, "cpu_us_per_conn": setup_cpu * 1e6 / max(1, total),
                "kib_per_conn": (rss - base_rss) / max(1, total), "rss_mib": rss / 1024, "broadcasts": rows}
    finally:
        close(procs)
        servers.stop()


def until_idle(pid: int, deadline: float) -> float:
    """The process's CPU seconds once a whole second passed with (almost) none used."""
    end, last = time.monotonic() + deadline, cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(1)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return now
        last = now
    return last


def close(procs: list[subprocess.Popen]) -> None:
    """Every generator drops its connections and exits."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.stdin.write("close\n")
                proc.stdin.flush()
            except OSError:
                pass
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def pct(sorted_values: list, p: float):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.crowd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=19000)
    p.add_argument("--servers", default="node,hub", help="node, hub, hub-redis, hub-redis-one")
    p.add_argument("--broadcasts", type=int, default=5)
    p.add_argument("--per-generator", type=int, default=19000, help="connections per generator process")
    p.add_argument("--deadline", type=float, default=600.0)
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "ws").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    limit = raise_fd_limit()
    if args.clients + 200 > limit or args.per_generator + 200 > limit:
        sys.exit(f"this machine lets a process hold {limit} descriptors (hard RLIMIT_NOFILE): "
                 f"at most {limit - 200} connections per server and per generator")
    print(platform_line())
    print(f"{args.clients} connections to {NS}, {args.broadcasts} broadcasts to all of them\n")
    print("| server | connected (failed) | connect+auth/s | server CPU per conn | RSS per conn | server RSS | "
          "server CPU per disconnect | broadcast: received, p50 / p99 / max ms, server CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    tmp = Path(tempfile.mkdtemp(prefix="hub-crowd-"))
    first = secrets.randbelow(200) + 1  # this invocation's block of 127.x.0.0/16 source addresses
    for run, name in enumerate(args.servers.split(","), first):
        d = tmp / name
        d.mkdir()
        if name == "node":
            servers = NodeServers(d)
        else:
            servers = HubServers(d, **HUB_KINDS[name])
            servers.name = name
        r = measure(servers, args.clients, args.per_generator, run, args.broadcasts, args.deadline)
        casts = "; ".join(f"{b['received']}, {fmt(b['p50'])} / {fmt(b['p99'])} / {fmt(b['max'])}, "
                          f"{b['cpu'] * 1000:.0f} ms" for b in r["broadcasts"])
        print(f"| {servers.name} | {r['clients']} ({r['failed']}) | {r['rate']:.0f} | {r['cpu_us_per_conn']:.0f} us | "
              f"{r['kib_per_conn']:.1f} KiB | {r['rss_mib']:.0f} MiB | {r['cpu_us_per_disconnect']:.0f} us | {casts} |",
              flush=True)


if __name__ == "__main__":
    main()
