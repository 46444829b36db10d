"""A Redis Cluster of the test's own: 6 redis-server processes on loopback (3
masters, 3 replicas), made one cluster by `redis-cli --cluster create`, stopped by
PID. Never the shared Redis.

Ports: a node listens on p and gossips on p + 10000 (the cluster bus), so both
must be free; they are picked from HUB_TEST_CLUSTER_PORTS (lo-hi, default
30000-30999)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = 6
# A master not heard of for this long (ms) is failed over to its replica.
NODE_TIMEOUT_MS = 1000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    lo, _, hi = os.environ.get("HUB_TEST_CLUSTER_PORTS", "30000-30999").partition("-")
    found = []
    for port in range(int(lo), int(hi) + 1):
        if _bindable(port) and _bindable(port + 10000):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError(f"no {n} free port pairs (p, p+10000) in {lo}-{hi}")


def cluster_support() -> str | None:
    """Why no cluster can be started here, or None."""
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"redis-server: {exc}"
    version = out.partition(" v=")[2].split(" ")[0]
    if not version or int(version.split(".")[0]) < 7:
        return f"redis-server {version or '?'} lacks sharded pub/sub (Redis 7 needed)"
    try:
        subprocess.run(["redis-cli", "--version"], capture_output=True, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        return f"redis-cli: {exc}"
    return None


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True,
                          timeout=timeout).stdout


class RedisClusterProcs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = _ports(NODES)
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        # Every node given: the client needs any one of them up.
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> "RedisClusterProcs":
        for port in self.ports:
            folder = self.tmp / str(port)
            folder.mkdir(parents=True, exist_ok=True)
            self.procs[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--save", "", "--appendonly", "no", "--dir", str(folder)],
                stdout=open(folder / "log", "wb"), stderr=subprocess.STDOUT)
        for port in self.ports:
            self._until(lambda p=port: _cli(p, "ping").strip() == "PONG", f"node {port} to answer")
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        self.wait_ok()
        # A replica that has not synced with its master yet cannot be promoted: a
        # failover test killing that master would wait for a cluster that never heals.
        self._until(lambda: all("role:master" in info or "master_link_status:up" in info
                                for info in (_cli(p, "info", "replication") for p in self.running())),
                    "every replica to sync with its master", timeout=60)
        return self

    def wait_ok(self, ports: list[int] | None = None) -> None:
        """Until every running node says cluster_state:ok and knows 3 masters with slots."""
        def ok() -> bool:
            for port in ports or self.running():
                info = _cli(port, "cluster", "info")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
            return True
        self._until(ok, "cluster_state:ok on every node", timeout=60)

    def running(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot now."""
        slot = int(_cli(self.running()[0], "cluster", "keyslot", key).strip())
        for line in _cli(self.running()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2]:
                for rng in fields[8:]:
                    lo, _, hi = rng.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return int(fields[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL one node (no goodbye to the cluster)."""
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    @staticmethod
    def _until(check, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)  # polling processes that give no other signal of readiness
