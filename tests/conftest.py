"""Shared fixtures (only fixtures: what they use lives in tests/support/): real
databases, real Redis, real servers on loopback ports, real clients.

PostgreSQL and Redis tests use the local services and a fresh database / key prefix
per run. Where a service is unreachable those tests are skipped, unless CI is set,
where that is a failure."""
from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from hub.app import create_app
from hub.adapters.http.common import HUB
from hub.settings import Settings
from tests.support.clients import Api, Client
from tests.support.node import JsDriver
from tests.support.paths import JS_DIR, ROOT
from tests.support.servers import SECRET, HubProcess, Server, make_settings
from tests.support.services import (PG_ADMIN, REDIS_URL, PrivateRedis, free_port, in_thread, prefix_patterns,
                                    unavailable)
from tests.support.teardown import all_bounded

# --- services -------------------------------------------------------------------


@pytest.fixture
def pg_url():
    """A PostgreSQL database of this test's own, dropped afterwards (a shared one let one
    test's waiting dialogs reach the next test's operators)."""
    import asyncpg

    name = f"hub_test_{secrets.token_hex(4)}"

    async def create():
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()

    async def drop():
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    try:
        in_thread(create)
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    in_thread(drop)


@pytest.fixture(scope="session")
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"hubtest:{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for pattern in prefix_patterns(prefix):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A Redis Cluster of this run's own (6 nodes: 3 masters, 3 replicas), shared by
    the tests that only use it; skipped where redis-server cannot run one (a failure
    under CI)."""
    from tests.support.redis_cluster import RedisClusterProcs, cluster_support

    why = cluster_support()
    if why:
        unavailable("a Redis Cluster", RuntimeError(why))
    cluster = RedisClusterProcs(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        unavailable("a Redis Cluster", exc)
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster):
    """The redis+cluster:// URL of the run's cluster (keys of a test's own: redis_prefix)."""
    return redis_cluster.url


@pytest.fixture(params=["redis", "cluster"])
def any_redis_url(request):
    """A contract suite's Redis: the shared one, then the run's cluster."""
    return request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own on a free port, which it may stop and start."""
    if not shutil.which("redis-server"):
        unavailable("redis-server", FileNotFoundError("not installed"))
    redis = PrivateRedis(tmp_path).start()
    yield redis
    redis.stop()


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Embedded default: an SQLite file, in-process fan-out."""
    return make_settings(tmp_path)


# --- in-process servers -----------------------------------------------------------


@pytest.fixture
async def start_server():
    """Factory: start a hub app on a free loopback port; stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(settings: Settings) -> Server:
        app = create_app(settings)
        runner = web.AppRunner(app, shutdown_timeout=1)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return Server(app, runner, port)

    yield start
    await all_bounded([runner.cleanup() for runner in runners], "stopping a hub", timeout=30)


@pytest.fixture
async def server(start_server, settings) -> Server:
    return await start_server(settings)


# --- clients ------------------------------------------------------------------------


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server, http) -> Api:
    return Api(server.url, http)


@pytest.fixture
async def connect():
    """Factory: connect(url, namespace, token) -> Client; all closed after the test."""
    clients: list[Client] = []

    async def make(url: str, namespace: str, token: str | None, **kw) -> Client:
        client = Client(namespace)
        clients.append(client)
        return await client.connect(url, token, **kw)

    yield make
    await all_bounded([client.sio.disconnect() for client in clients], "closing a Socket.IO client",
                      ignore=Exception)


# --- hub processes ----------------------------------------------------------------


@pytest.fixture
async def spawn_hubs(tmp_path):
    """Factory: start n `hub serve` processes sharing one environment; stopped afterwards."""
    procs: list[HubProcess] = []

    async def spawn(n: int, env: dict[str, str]) -> list[HubProcess]:
        started = []
        for _ in range(n):
            full = {**os.environ, "HUB_JWT_SECRET": SECRET, "HUB_DATA_DIR": str(tmp_path / "data"),
                    "HUB_LOG_LEVEL": "INFO", **env}
            proc = HubProcess(free_port(), full, tmp_path / f"hub-{len(procs)}.log").start()
            procs.append(proc)
            started.append(proc)
        for proc in started:
            await proc.ready()
        return started

    yield spawn
    for proc in procs:
        proc.stop()


@pytest.fixture
async def two_hubs(spawn_hubs, pg_url, redis_url, redis_prefix):
    """Two `hub serve` processes sharing PostgreSQL and Redis."""
    return await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                "HUB_REDIS_PREFIX": redis_prefix})


# --- the official JavaScript client ------------------------------------------------


@pytest.fixture(scope="session")
def node():
    """Path to node with tests/js/node_modules installed (`npm ci --prefix tests/js`)."""
    if not (JS_DIR / "node_modules" / "socket.io-client").exists():
        unavailable("tests/js/node_modules (run npm ci --prefix tests/js)", FileNotFoundError())
    return "node"


@pytest.fixture
async def js_driver(node):
    """Factory: start an official JS client driven command by command (JsDriver)."""
    procs = []

    async def start() -> JsDriver:
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "driver.mjs"), cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        procs.append(proc)
        return JsDriver(proc)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


CHROMIUM = os.environ.get("HUB_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser_deps(node):
    """Chromium and the packages the browser tests drive it with (or a skip): its path."""
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        unavailable(f"Chromium ({CHROMIUM}; apt-get install chromium)", FileNotFoundError(CHROMIUM))
    if not (JS_DIR / "node_modules" / "playwright-core").exists():
        unavailable("playwright-core (npm ci --prefix tests/js)", FileNotFoundError("playwright-core"))
    if not (ROOT / "web" / "node_modules" / "socket.io-client" / "dist").exists():
        unavailable("web/node_modules (npm ci --prefix web)", FileNotFoundError("socket.io-client"))
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
