"""The benchmark: the hub (`hub serve`, the real code path) against a Node socket.io
4.8 peer, on loopback, driven by the same Node load generator (official
socket.io-client, websocket transport; see --receivers). Prints the table of
docs/performance.md.

    .venv/bin/python -m loadtests.bench                 # everything (~10-15 min)
    .venv/bin/python -m loadtests.bench --only fanout --sizes 500 --step-seconds 2

Needs `npm ci --prefix loadtests/node`; the Redis scenario needs Redis at
HUB_BENCH_REDIS (default redis://127.0.0.1:6379/0), the chat scenario PostgreSQL at
HUB_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres; a throwaway
database is created and dropped). Every run is bounded in time and count: each load
step lasts --step-seconds, each drain at most --drain-seconds, each generator run at
most --deadline seconds, and the ramp stops at the first step not sustained.

Scenarios (each starts fresh server processes; Node and the hub back to back):
  fanout  one room of N clients (all sockets of one user), one sender emitting
          `typing:set` (acked) that the server broadcasts to the room as
          `typing:indicator` (~50-byte JSON). Ramp the delivery rate from
          --start-rate by --growth (after a 2 s warm-up) until a step is not
          fully delivered. A step is delivered when every delivery arrived
          within --drain-seconds and the sender kept the rate; sustained when,
          in addition, p99 < 100 ms. Also
          measured there: connection setup rate (connect + JWT check + join, 100 in
          flight) and memory per idle authenticated connection (server RSS after
          minus before the N connections, divided by N).
  redis   the same with two server instances sharing Redis (half of the room on
          each, the sender on the first): hub on its Redis bus, Node on
          @socket.io/redis-adapter.
  chat    hub only, PostgreSQL: 1:1 `message:send` (persisted, acked) from 50
          senders to 50 recipients; after a 2 s warm-up, ramp the rate from
          --chat-start-rate by --growth until a step is not fully acked or its
          p99 ack is over 500 ms. Sustained: p99 ack under 50 ms.
          `--only chat --chat-start-rate 1500 --growth 1 --chat-steps 4
          --step-seconds 5` holds 1,500/s for four steps instead.

--receivers (fanout and redis): `official` (default) receives with socket.io-client;
`lean` with raw websockets (the `ws` package) speaking Engine.IO v4 / Socket.IO v5
themselves. Why: with socket.io-client the generator spends ~40 us of CPU per
delivery (2-core VM), ~200 ms for one broadcast to 5,000, more than the servers spend
sending it, so at that size the benchmark measures the generator. Lean receivers use
the same websocket transport, URL, handshake (CONNECT to /chat with the token as
auth) and websocket options, and answer pings, but recognise a `typing:indicator` by
its packet prefix without parsing it: ~27 us per delivery. The rest (~17-19 us: a
wakeup, a read and a stream callback per socket per message) any Node receiver pays,
so at 5,000 on 2 cores the generator still takes about as much CPU per broadcast as
the server. The sender stays socket.io-client; both servers get the same generator.
Connection setup rates depend on the receivers (lean ones connect faster); compare
them only within one mode.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "loadtests" / "node"
REDIS_URL = os.environ.get("HUB_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("HUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_value(pid: int, file: str, field: str) -> int:
    """A number of /proc/<pid>/<file>'s line `field` (e.g. "VmRSS:" of status)."""
    for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    return proc_value(pid, "status", "VmRSS:")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60, log: Path | None = None) -> None:
    """Until `url` answers with a status below 500 (a 503 from /ready: not yet)."""
    tail = lambda: f":\n{log.read_text()[-3000:]}" if log else ""  # noqa: E731
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}) before {url} answered{tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except OSError as exc:
            if getattr(exc, "code", None) and exc.code < 500:  # an HTTP error status: it is up
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s{tail()}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spawn(args: list[str], *, port: int, ready: str, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
    """A server process on `port`, its output appended to `log`, once `ready` answers."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready}", proc, log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


# --- the servers ------------------------------------------------------------------

@dataclass
class Users:
    sender_id: int
    sender_token: str
    receiver_id: int
    receiver_token: str
    pairs: list = field(default_factory=list)  # chat: (sender_id, token, recipient_id, recipient_token)


async def _setup_users(env: dict, pairs: int) -> Users:
    """Accounts straight in the database (argon2 once), tokens minted with the secret,
    the direct thread of the fan-out pair created; as `hub users create` would."""
    from hub.auth import Tokens, hash_password
    from hub.settings import Settings
    from storage import chat as chat_store
    from storage import users as users_store
    from storage.db import Database
    from storage.migrate import upgrade

    settings = Settings.from_env(env)
    if settings.sqlite_path:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    tokens = Tokens(env["HUB_JWT_SECRET"], access_ttl=24 * 3600, refresh_ttl=3600, service_ttl=3600)
    db = Database(settings.database_url)
    try:
        await upgrade(db.engine)
        pw = await hash_password(secrets.token_hex(8))
        run = secrets.token_hex(3)
        async with db.transaction() as tx:
            made = []
            for i in range(2 + 2 * pairs):
                made.append(await users_store.create_user(tx, email=f"bench{run}-{i}@example.com",
                                                          password_hash=pw, first_name="Bench"))
            await chat_store.get_or_create_direct(tx, made[0].id, made[1].id)
            for i in range(pairs):
                a, b = made[2 + 2 * i], made[3 + 2 * i]
                await chat_store.get_or_create_direct(tx, a.id, b.id)
        tok = lambda u: tokens.access(u.id, "user").token  # noqa: E731
        users = Users(made[0].id, tok(made[0]), made[1].id, tok(made[1]))
        for i in range(pairs):
            a, b = made[2 + 2 * i], made[3 + 2 * i]
            users.pairs.append((a.id, tok(a), b.id, tok(b)))
        return users
    finally:
        await db.close()


class Servers:
    """Server processes of one kind, stopped together."""

    procs: list[subprocess.Popen]
    urls: list[str]

    def stop(self) -> None:
        for p in self.procs:
            stop(p)


class HubServers(Servers):
    name = "hub"

    def __init__(self, tmp: Path, instances: int = 1, database_url: str | None = None,
                 redis: bool = False, extra_env: dict | None = None) -> None:
        self.secret = secrets.token_urlsafe(40)
        self.env = {**os.environ, "HUB_DATA_DIR": str(tmp / "hub-data"), "HUB_JWT_SECRET": self.secret,
                    "HUB_LOG_LEVEL": "WARNING", "HUB_EVENT_RATE": "1000000", "HUB_EVENT_BURST": "1000000",
                    # every simulated client comes from 127.0.0.1
                    "HUB_MAX_CONNECTIONS_PER_ADDRESS": "0",
                    "HUB_USER_OP_LIMIT": "1000000000",
                    **(extra_env or {})}
        if database_url:
            self.env["HUB_DATABASE_URL"] = database_url
        if redis:
            self.env["HUB_REDIS_URL"] = REDIS_URL
            self.env["HUB_REDIS_PREFIX"] = f"bench-{secrets.token_hex(4)}"
        self.instances = instances
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.tmp = tmp

    def setup(self, pairs: int = 0) -> Users:
        return asyncio.run(_setup_users(self.env, pairs))

    def start(self) -> None:
        for i in range(self.instances):
            port = free_port()
            self.procs.append(spawn([sys.executable, "-m", "hub.cli", "serve", "--port", str(port)], port=port,
                                    ready="/ready", cwd=ROOT, env=self.env, log=self.tmp / f"hub-{i}.log"))
            self.urls.append(f"http://127.0.0.1:{port}")


class NodeServers(Servers):
    name = "node socket.io 4.8"

    def __init__(self, tmp: Path, instances: int = 1, redis: bool = False, extra_env: dict | None = None) -> None:
        self.secret = secrets.token_urlsafe(40)
        self.instances, self.redis, self.tmp = instances, redis, tmp
        self.extra_env = extra_env or {}
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []

    def setup(self, pairs: int = 0) -> Users:
        import jwt

        def tok(uid):
            now = int(time.time())
            return jwt.encode({"sub": str(uid), "typ": "access", "role": "user", "iat": now, "exp": now + 86400,
                               "jti": secrets.token_hex(8)}, self.secret, algorithm="HS256")
        return Users(1, tok(1), 2, tok(2))

    def start(self) -> None:
        env = {**os.environ, "BENCH_RUN": secrets.token_hex(4), **self.extra_env}
        for i in range(self.instances):
            port = free_port()
            args = ["node", str(NODE_DIR / "server.mjs"), str(port), self.secret] + ([REDIS_URL] if self.redis else [])
            self.procs.append(spawn(args, port=port, ready="/socket.io/?EIO=4&transport=polling", cwd=NODE_DIR,
                                    env=env, log=self.tmp / f"node-{i}.log"))
            self.urls.append(f"http://127.0.0.1:{port}")


# --- the generator ----------------------------------------------------------------

def run_generator(job: dict, servers, timeout: float, on_connected=None) -> list[dict]:
    """Run loadgen.mjs; on its `connected` line call on_connected() then say go."""
    proc = subprocess.Popen(["node", str(NODE_DIR / "loadgen.mjs"), json.dumps(job)], cwd=NODE_DIR,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[dict] = []
    deadline = time.monotonic() + timeout
    cpu = lambda: sum(cpu_seconds(p.pid) for p in servers.procs)  # noqa: E731
    last_cpu = cpu()
    try:
        for raw in proc.stdout:
            line = json.loads(raw)
            lines.append(line)
            now_cpu = cpu()
            if line["phase"] == "connected" and line.get("clients"):
                line["cpu_us_per_conn"] = (now_cpu - last_cpu) * 1e6 / line["clients"]
            if line["phase"] == "step":
                # Server CPU spent on this step (its sending and its drain), per
                # delivery or request: steadier than rates on a shared machine.
                done = line.get("deliveries") or line.get("acked") or 0
                line["server_cpu_s"] = now_cpu - last_cpu
                line["cpu_us_per_item"] = (now_cpu - last_cpu) * 1e6 / done if done else None
            last_cpu = now_cpu
            if line["phase"] == "connected" and job.get("wait_go"):
                if on_connected:
                    line.update(on_connected(line))
                proc.stdin.write("go\n")
                proc.stdin.flush()
            if line["phase"] == "step":
                print(f"    {servers.name:18} target {line['target']:>7}/s  "
                      + (f"got {line.get('deliveries_per_s', line.get('acked_per_s', 0)):9.0f}/s  "
                         f"p50 {fmt(line['p50'])} p99 {fmt(line['p99'])} ms  "
                         f"server CPU {fmt(line['cpu_us_per_item'])} us/item  "
                         + ("ok" if line["sustained"] else "p99 over the limit" if line.get("delivered")
                            else "NOT delivered")), flush=True)
            if time.monotonic() > deadline:
                break
        proc.wait(max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    if err.strip():
        print("    generator stderr:", err.strip()[-500:], file=sys.stderr)
    return lines


def fmt(v) -> str:
    return "-" if v is None else f"{v:6.1f}"


def summarize(lines: list[dict], key: str) -> dict:
    steps = [l for l in lines if l["phase"] == "step"]
    ok = [s for s in steps if s["sustained"]]
    best = max(ok, key=lambda s: s[key]) if ok else None
    delivered = [s for s in steps if s.get("delivered", s["sustained"])]
    top = max(delivered, key=lambda s: s[key]) if delivered else None
    connected = next((l for l in lines if l["phase"] == "connected"), {})
    return {"best": best, "throughput": top, "steps": steps, "connected": connected,
            "done": next((l["reason"] for l in lines if l["phase"] == "done"), "no result")}


def ramp(start: int, growth: float, top: int, steps: int = 100) -> list[int]:
    """start, start*growth, ... up to top, at most `steps` of them: fine steps where
    rates are low (with growth 1, the same rate `steps` times)."""
    rates, rate = [], float(start)
    while rate <= top and len(rates) < steps:
        rates.append(int(float(f"{rate:.2g}")))  # two significant digits
        rate *= growth
    return rates


def fanout_run(servers, clients: int, args, instances: int = 1) -> dict:
    users = servers.setup()
    servers.start()
    try:
        base = sum(rss_kib(p.pid) for p in servers.procs)

        def measure(line):
            time.sleep(2)  # let the servers settle (and Python's allocator) before reading RSS
            after = sum(rss_kib(p.pid) for p in servers.procs)
            return {"rss_before_kib": base, "rss_after_kib": after,
                    "kib_per_conn": (after - base) / max(1, line["clients"])}

        rates = ramp(args.start_rate, args.growth, args.max_rate)
        job = {"mode": "fanout", "urls": servers.urls, "clients": clients,
               "receiver_token": users.receiver_token, "receiver_id": users.receiver_id,
               "sender_url": servers.urls[0], "sender_token": users.sender_token,
               "rates": rates, "step_s": args.step_seconds, "drain_s": args.drain_seconds,
               "p99_ms": 100, "deadline_s": args.deadline, "wait_go": True, "connect_concurrency": 100,
               "receivers": args.receivers}
        res = summarize(run_generator(job, servers, args.deadline + 30, measure), "deliveries_per_s")
        res["receivers"] = args.receivers
        return res
    finally:
        servers.stop()


@contextlib.contextmanager
def throwaway_pg():
    """The SQLAlchemy URL of a PostgreSQL database of its own, dropped afterwards."""
    import asyncpg

    name = f"hub_bench_{secrets.token_hex(4)}"

    async def admin(sql):
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def chat_run(args, tmp: Path) -> dict:
    with throwaway_pg() as url:
        servers = HubServers(tmp / "chat", database_url=url)
        (tmp / "chat").mkdir(exist_ok=True)
        users = servers.setup(pairs=args.chat_pairs)
        servers.start()
        try:
            url0 = servers.urls[0]
            job = {"mode": "chat", "run": secrets.token_hex(3), "text": "x" * 64,
                   "pairs": [{"url": url0, "token": t, "recipient_id": r} for (_, t, r, _) in users.pairs],
                   "recipients": [{"url": url0, "token": rt} for (_, _, _, rt) in users.pairs],
                   "rates": ramp(args.chat_start_rate, args.growth, args.chat_max_rate, args.chat_steps),
                   "step_s": args.step_seconds, "drain_s": args.drain_seconds, "p99_ms": 50,
                   "deadline_s": args.deadline}
            return summarize(run_generator(job, servers, args.deadline + 30), "acked_per_s")
        finally:
            servers.stop()


# --- the report ---------------------------------------------------------------------

def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def cpu_at_common_step(n, h):
    """(rate, node us, hub us) at the highest target both servers fully delivered."""
    if not n or not h:
        return None
    ns = {s["target"]: s for s in n["steps"] if s.get("delivered") and s.get("cpu_us_per_item")}
    hs = {s["target"]: s for s in h["steps"] if s.get("delivered") and s.get("cpu_us_per_item")}
    both = sorted(set(ns) & set(hs))
    if not both:
        return None
    r = both[-1]
    return r, ns[r]["cpu_us_per_item"], hs[r]["cpu_us_per_item"]


def print_report(results: dict) -> None:
    print("\n## Results\n")
    print("| scenario | Node socket.io 4.8 | hub | hub / Node |")
    print("| --- | --- | --- | --- |")
    for key, res in results.items():
        if key.startswith("fanout") or key.startswith("redis"):
            n, h = res.get("node"), res.get("hub")
            nb = n and n["best"]
            hb = h and h["best"]
            nv = nb["deliveries_per_s"] if nb else 0
            hv = hb["deliveries_per_s"] if hb else 0
            cell = lambda b: f"{b['deliveries_per_s']:,.0f}/s (p99 {b['p99']:.0f} ms)" if b else "none sustained"  # noqa
            print(f"| {key}: deliveries/s with p99 < 100 ms | {cell(nb) if n else '-'} | {cell(hb) if h else '-'} "
                  f"| {ratio(hv, nv)} |")
            nt, ht = n and n["throughput"], h and h["throughput"]
            print(f"| {key}: deliveries/s all delivered, any p99 | {cell(nt) if n else '-'} "
                  f"| {cell(ht) if h else '-'} | {ratio(ht and ht['deliveries_per_s'], nt and nt['deliveries_per_s'])} |")
            common = cpu_at_common_step(n, h)
            if common:
                rate, ncpu, hcpu = common
                print(f"| {key}: server CPU per delivery at {rate:,}/s | {ncpu:.1f} us | {hcpu:.1f} us "
                      f"| {ratio(hcpu, ncpu)} |")
            if key.startswith("fanout"):
                nc, hc = (n or {}).get("connected", {}), (h or {}).get("connected", {})
                print(f"| {key}: connection setup (connect + JWT + join) | {nc.get('rate', 0):,.0f}/s "
                      f"| {hc.get('rate', 0):,.0f}/s | {ratio(hc.get('rate'), nc.get('rate'))} |")
                print(f"| {key}: server CPU per connection set up | {nc.get('cpu_us_per_conn', 0):,.0f} us "
                      f"| {hc.get('cpu_us_per_conn', 0):,.0f} us "
                      f"| {ratio(hc.get('cpu_us_per_conn'), nc.get('cpu_us_per_conn'))} |")
                print(f"| {key}: memory per idle authenticated connection | {nc.get('kib_per_conn', 0):.1f} KiB "
                      f"| {hc.get('kib_per_conn', 0):.1f} KiB | {ratio(hc.get('kib_per_conn'), nc.get('kib_per_conn'))} |")
        elif key == "chat":
            cell = lambda b: (f"{b['acked_per_s']:,.0f}/s (p99 ack {b['p99']:.1f} ms, server CPU "  # noqa: E731
                              f"{b['cpu_us_per_item']:.0f} us/message)") if b else "none"
            print(f"| 1:1 chat on PostgreSQL: acked message:send/s with p99 < 50 ms | - | {cell(res['best'])} | - |")
            print(f"| 1:1 chat on PostgreSQL: acked message:send/s, any p99 | - | {cell(res['throughput'])} | - |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="fanout,redis,chat", help="comma-separated: fanout, redis, chat")
    p.add_argument("--sizes", default="500,5000", help="room sizes for the single-instance fan-out")
    p.add_argument("--redis-size", type=int, default=500)
    p.add_argument("--servers", default="node,hub", help="node, hub or both (order of the runs)")
    p.add_argument("--step-seconds", type=float, default=3.0)
    p.add_argument("--drain-seconds", type=float, default=5.0)
    p.add_argument("--start-rate", type=int, default=5_000, help="deliveries/s of the first step")
    p.add_argument("--growth", type=float, default=1.25, help="each step's rate over the previous one's")
    p.add_argument("--max-rate", type=int, default=250_000)
    p.add_argument("--chat-pairs", type=int, default=50)
    p.add_argument("--chat-start-rate", type=int, default=100, help="message:send/s of the first chat step")
    p.add_argument("--chat-max-rate", type=int, default=6000)
    p.add_argument("--chat-steps", type=int, default=100,
                   help="chat steps at most; with --growth 1 they hold one rate (to compare two trees)")
    p.add_argument("--receivers", choices=["official", "lean"], default="official",
                   help="fan-out receivers: socket.io-client, or lean raw websockets (see above)")
    p.add_argument("--deadline", type=float, default=150.0, help="seconds per generator run, at most")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args(argv)
    if not (NODE_DIR / "node_modules" / "socket.io").exists():
        sys.exit("run `npm ci --prefix loadtests/node` first")
    only = set(args.only.split(","))
    which = args.servers.split(",")
    results: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="hub-bench-"))
    print(f"machine: {os.cpu_count()} cores, {platform_line()}; fan-out receivers: {args.receivers}; "
          f"logs in {tmp}", flush=True)
    try:
        if "fanout" in only:
            for n in [int(x) for x in args.sizes.split(",") if x]:
                key = f"fanout {n}"
                results[key] = {}
                for w in which:
                    print(f"{key}: {w}", flush=True)
                    d = tmp / f"{w}-{n}"
                    d.mkdir()
                    servers = NodeServers(d) if w == "node" else HubServers(d)
                    results[key][w] = fanout_run(servers, n, args)
        if "redis" in only:
            key = f"redis 2 instances, {args.redis_size}"
            results[key] = {}
            for w in which:
                print(f"{key}: {w}", flush=True)
                d = tmp / f"{w}-redis"
                d.mkdir()
                servers = NodeServers(d, 2, redis=True) if w == "node" else HubServers(d, 2, redis=True)
                results[key][w] = fanout_run(servers, args.redis_size, args)
        if "chat" in only:
            print("chat on PostgreSQL: hub", flush=True)
            results["chat"] = chat_run(args, tmp)
    finally:
        print_report(results)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        shutil.rmtree(tmp / "hub-data", ignore_errors=True)


def platform_line() -> str:
    import platform
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except StopIteration:
        pass
    return f"{cpu}, Python {platform.python_version()}, node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}"


if __name__ == "__main__":
    main()
