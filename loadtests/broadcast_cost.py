"""CPU per delivery of the hub's broadcast path, measured inside one process.

    .venv/bin/python -m loadtests.broadcast_cost [--clients 500] [--messages 200]

An in-process hub (uvloop, SQLite in a temporary folder) takes N websocket
connections from loadtests/node/loadgen.mjs in connect-only mode (one room: the
sockets of one user). Then `time.process_time()` is read around M emits of a
~50-byte event to that room, one per loop iteration, on these paths:

* `sio.emit` through HubManager (engine/manager.py);
* the same ready frame written with `transport.write` to every socket in a bare
  loop (the kernel's part: TCP on loopback, waking the reader);
* the same event to N plain WebSocket clients of the generic /ws
  (loadtests/node/plain_clients.mjs) through the fan-out's members;
* python-socketio's own AsyncManager.emit (a task per recipient), the fast path
  turned off, compression off.

Bounded: M emits per path, a 120 s deadline for the generator.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import tempfile
import time

from aiohttp import web

from loadtests import bench


async def measure(clients: int, messages: int) -> None:
    from hub.app import create_app
    from hub.adapters.http.common import HUB
    from engine import ws_frame
    from hub.settings import Settings

    folder = tempfile.mkdtemp(prefix="hub-bcast-")
    env = {"HUB_DATA_DIR": folder, "HUB_JWT_SECRET": secrets.token_urlsafe(40), "HUB_LOG_LEVEL": "WARNING",
           "HUB_MAX_CONNECTIONS_PER_ADDRESS": "0"}  # every client comes from 127.0.0.1
    users = await bench._setup_users(env, 0)
    app = create_app(Settings.from_env(env))
    hub = app[HUB]
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = bench.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    job = {"mode": "fanout", "urls": [f"http://127.0.0.1:{port}"], "clients": clients,
           "receiver_token": users.receiver_token, "receiver_id": users.receiver_id, "rates": [],
           "deadline_s": 120, "wait_go": True, "connect_concurrency": 100}
    proc = await asyncio.create_subprocess_exec("node", str(bench.NODE_DIR / "loadgen.mjs"), json.dumps(job),
                                                cwd=bench.NODE_DIR, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        n = line["clients"]
        print(f"{n} connections")
        room = f"user:{users.receiver_id}"
        data = {"thread_id": 1, "user_id": users.sender_id, "is_typing": True}

        async def run(label, send, count):
            await asyncio.sleep(0.5)
            started = time.process_time()
            for _ in range(count):
                await send()
                await asyncio.sleep(0.01)  # one message per loop iteration, as at low rates
            cpu = time.process_time() - started  # sleeping costs no CPU time
            print(f"{label:60} {cpu / (count * n) * 1e6:6.2f} us CPU per delivery")

        def emit():
            return hub.sio.emit("typing:indicator", data, to=room, namespace="/chat")

        await run("sio.emit through HubManager", emit, messages)
        frame = ws_frame("42/chat," + json.dumps(["typing:indicator", data], separators=(",", ":")))
        transports = [s.hub_ws.raw for s in hub.sio.eio.sockets.values() if getattr(s, "hub_ws", None)]

        async def bare():
            for t in transports:
                t.write(frame)

        await run("transport.write of the ready frame, bare loop", bare, messages)
        await plain_ws(hub, port, users, clients, run, room, data, messages)
        hub.sio.manager.fast = False
        await run("python-socketio's own AsyncManager.emit", emit, max(1, messages // 2))
    finally:
        if proc.returncode is None:
            await release(proc)
        await runner.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


async def plain_ws(hub, port: int, users, clients: int, run, room: str, data: dict, messages: int) -> None:
    """The same broadcast to N plain WebSocket clients of the generic /ws (the same
    user's room), through the fan-out's members (hub/adapters/gateways/members.py)."""
    job = {"url": f"http://127.0.0.1:{port}", "token": users.receiver_token, "clients": clients}
    proc = await asyncio.create_subprocess_exec("node", str(bench.NODE_DIR / "plain_clients.mjs"), json.dumps(job),
                                                cwd=bench.NODE_DIR, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))
        print(f"{line['clients']} plain /ws connections")
        members = hub.fanout.members

        async def emit_plain():
            members.emit("/chat", "typing:indicator", data, [room], None, None)

        await run("plain /ws: Members.emit (one frame, written to each)", emit_plain, messages)
    finally:
        await release(proc)


async def release(proc) -> None:
    """Tell a client process to finish (a line on stdin), and wait for it (bounded)."""
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except asyncio.TimeoutError:
        proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.broadcast_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--messages", type=int, default=200)
    args = p.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(measure(args.clients, args.messages))


if __name__ == "__main__":
    main()
