"""The machine's services a test may use: the shared PostgreSQL and Redis (addresses
overridable by HUB_TEST_PG / HUB_TEST_REDIS), free loopback ports, and a private
redis-server a test may stop and start."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUB_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(what: str, exc: Exception):
    """Skip the test for a missing service or tool; under CI that is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is unreachable in CI: {exc}")
    pytest.skip(f"{what} is unreachable: {exc}")


def prefix_patterns(prefix: str) -> list[str]:
    """SCAN patterns for every key under `prefix`: plain (`prefix:...`) and hash-tagged
    (`{prefix:...}...`, hub/backends/redis.py `tagged`)."""
    return [f"{prefix}:*", "{" + f"{prefix}:*"]


async def delete_prefixed(client, prefix: str) -> None:
    """Delete every key under `prefix` (an async client, plain or cluster)."""
    for pattern in prefix_patterns(prefix):
        keys = [k async for k in client.scan_iter(pattern)]
        if keys:
            await client.delete(*keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_dsn(url: str) -> str:
    """The asyncpg DSN of a `pg_url` (which names SQLAlchemy's driver)."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def in_thread(coro_fn):
    """Run a coroutine to completion in its own thread and loop (for sync fixtures)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


class PrivateRedis:
    """A redis-server of the test's own on a free port (never the shared one)."""

    def __init__(self, tmp_path: Path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                return self
            time.sleep(0.05)  # polling a process that gives no other signal of readiness
        raise RuntimeError("private redis did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
