"""Idle authenticated connections only: N websocket clients connect to /chat with a
JWT and join their user room (loadgen.mjs, fan-out job with no load steps), then
the server's RSS growth per connection and its CPU per connection set up are
printed, for each server, back to back. Bounded: one generator run per server,
--deadline seconds at most.

    .venv/bin/python -m loadtests.conn_memory --clients 5000 --servers node,hub
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from loadtests.bench import NODE_DIR, HubServers, NodeServers, rss_kib, run_generator


def measure(servers, clients: int, deadline: float) -> dict:
    users = servers.setup()
    servers.start()
    try:
        base = sum(rss_kib(p.pid) for p in servers.procs)
        seen: dict = {}

        def on_connected(line):
            time.sleep(2)  # let the server settle before reading RSS (as loadtests.bench)
            seen["kib"] = (sum(rss_kib(p.pid) for p in servers.procs) - base) / max(1, line["clients"])
            return {}

        job = {"mode": "fanout", "urls": servers.urls, "clients": clients, "receiver_token": users.receiver_token,
               "receiver_id": users.receiver_id, "sender_url": servers.urls[0], "sender_token": users.sender_token,
               "rates": [], "step_s": 1, "drain_s": 1, "p99_ms": 100, "deadline_s": deadline, "wait_go": True,
               "connect_concurrency": 100}
        lines = run_generator(job, servers, deadline + 30, on_connected)
        connected = next((l for l in lines if l["phase"] == "connected"), {})
        return {"clients": connected.get("clients", 0), "failed": connected.get("failed"),
                "rate": connected.get("rate", 0.0), "cpu_us_per_conn": connected.get("cpu_us_per_conn"),
                "kib_per_conn": seen.get("kib")}
    finally:
        servers.stop()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.conn_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--servers", default="node,hub")
    p.add_argument("--deadline", type=float, default=120.0)
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "socket.io").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    tmp = Path(tempfile.mkdtemp(prefix="hub-connmem-"))
    for name in args.servers.split(","):
        d = tmp / name
        d.mkdir()
        r = measure(NodeServers(d) if name == "node" else HubServers(d), args.clients, args.deadline)
        kib = "-" if r["kib_per_conn"] is None else f"{r['kib_per_conn']:.1f}"
        cpu = "-" if r["cpu_us_per_conn"] is None else f"{r['cpu_us_per_conn']:.0f}"
        print(f"{name:5} {r['clients']} connected ({r['failed']} failed) at {r['rate']:.0f}/s: "
              f"{kib} KiB RSS and {cpu} us server CPU per connection", flush=True)


if __name__ == "__main__":
    main()
