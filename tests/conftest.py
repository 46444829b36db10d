"""Shared fixtures: real databases, real Redis, real servers on loopback ports, real clients.

PostgreSQL and Redis tests use the local services and a fresh database / key prefix
per run. Where a service is unreachable those tests are skipped, unless CI is set,
where that is a failure."""
from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import socketio
from aiohttp import web

from hub.app import create_app
from hub.adapters.http.common import HUB
from hub.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HUB_TEST_REDIS", "redis://127.0.0.1:6379/0")
SECRET = "test-secret-" + "x" * 40


def _unavailable(what: str, exc: Exception):
    if os.environ.get("CI"):
        pytest.fail(f"{what} is unreachable in CI: {exc}")
    pytest.skip(f"{what} is unreachable: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- services -------------------------------------------------------------------

def pg_dsn(url: str) -> str:
    """The asyncpg DSN of a `pg_url` (which names SQLAlchemy's driver)."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _in_thread(coro_fn):
    """Run a coroutine to completion in its own thread and loop (for sync fixtures)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn())).result()


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test run, dropped at the end."""
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
        _in_thread(create)
    except Exception as exc:
        _unavailable("PostgreSQL", exc)
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    yield f"{base}/{name}"
    _in_thread(drop)


@pytest.fixture(scope="session")
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        _unavailable("Redis", exc)
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
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def make_settings(data_dir: Path, **overrides) -> Settings:
    base = Settings.from_env({"HUB_DATA_DIR": str(data_dir), "HUB_JWT_SECRET": SECRET})
    return replace(base, **overrides)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Embedded default: an SQLite file, in-process fan-out."""
    return make_settings(tmp_path)


# --- in-process servers -----------------------------------------------------------

class Server:
    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app, self.runner, self.port = app, runner, port
        self.url = f"http://127.0.0.1:{port}"
        self.hub = app[HUB]


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

class Api:
    """A small HTTP client for a running hub."""

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url, self.session = url, session

    async def request(self, method: str, path: str, *, token: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body

    async def user(self, email: str | None = None, password: str = "password123", **names) -> dict:
        """Register and log in a new user; returns the login response."""
        email = email or f"u{secrets.token_hex(5)}@example.com"
        status, body = await self.request("POST", "/auth/register", json={"email": email, "password": password, **names})
        assert status == 201, body
        status, body = await self.request("POST", "/auth/login", json={"email": email, "password": password})
        assert status == 200, body
        return body


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(server, http) -> Api:
    return Api(server.url, http)


class Client:
    """A real python-socketio client on one namespace, recording server events."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, asyncio.Queue] = {}
        self.offsets: dict[str, list[str]] = {}
        self.sio.on("*", self._record, namespace=namespace)
        self.connect_error = None
        self.sio.on("connect_error", self._connect_error, namespace=namespace)

    async def _record(self, event, data=None, *rest):
        # Durable events carry their recovery offset as a last, extra argument.
        if rest:
            self.offsets.setdefault(event, []).append(rest[-1])
        self.queue(event).put_nowait(data)

    async def _connect_error(self, data):
        self.connect_error = data

    def queue(self, event: str) -> asyncio.Queue:
        return self.events.setdefault(event, asyncio.Queue())

    async def connect(self, url: str, token: str | None, transports=None):
        auth = {"token": token} if token else None
        await self.sio.connect(url, namespaces=[self.namespace], auth=auth, transports=transports,
                               wait_timeout=5)
        return self

    async def call(self, event: str, data=None, timeout: float = 10):
        return await self.sio.call(event, {} if data is None else data, namespace=self.namespace, timeout=timeout)

    async def ok(self, event: str, data=None):
        reply = await self.call(event, data)
        assert reply["ok"], reply
        return reply["data"]

    async def error(self, event: str, data=None) -> str:
        reply = await self.call(event, data)
        assert not reply["ok"], reply
        return reply["error"]["code"]

    async def next(self, event: str, timeout: float = 5):
        return await asyncio.wait_for(self.queue(event).get(), timeout)

    async def nothing(self, event: str, wait: float = 0.3) -> bool:
        """True if no `event` arrives within `wait` seconds."""
        await asyncio.sleep(wait)
        return self.queue(event).empty()

    async def close(self):
        await bounded(self.sio.disconnect(), "closing a Socket.IO client")


async def connect_refusal(url: str, namespace: str, token: str) -> dict | None:
    """The connect_error data a real client gets with `token` (None: it connected)."""
    sio = socketio.AsyncClient(reconnection=False)
    refused: dict = {}
    sio.on("connect_error", lambda data: refused.update(data or {}), namespace=namespace)
    try:
        await sio.connect(url, namespaces=[namespace], auth={"token": token}, wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        return refused.get("data")  # python-socketio wraps the CONNECT_ERROR data
    await sio.disconnect()
    return None


async def bounded(awaitable, what: str, timeout: float = 10):
    """Await a teardown step; if it hangs, fail with every task's stack instead of
    sitting until the suite's timeout (a teardown once hung here, unexplained)."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError:
        stacks = []
        for task in asyncio.all_tasks():
            frames = task.get_stack(limit=8)
            stacks.append(f"{task.get_name()}: " + " <- ".join(
                f"{f.f_code.co_filename.rsplit('/', 2)[-1]}:{f.f_lineno} {f.f_code.co_name}" for f in frames))
        raise AssertionError(f"{what} took over {timeout} s; tasks:\n" + "\n".join(stacks)) from None


async def all_bounded(awaitables, what: str, *, timeout: float = 10, ignore=()) -> None:
    """Run every teardown step, one after the other, even if one hangs or fails;
    then fail with the first that did. Errors of the `ignore` kinds do not count
    (a hang always does)."""
    failed = None
    for awaitable in awaitables:
        try:
            await bounded(awaitable, what, timeout)
        except AssertionError as exc:  # hung (bounded's own error), before `ignore` may swallow it
            failed = failed or exc
        except ignore:
            pass
        except Exception as exc:
            failed = failed or exc
    if failed:
        raise failed


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

class HubProcess:
    def __init__(self, port: int, env: dict, log: Path):
        self.port, self.env, self.log = port, env, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "HubProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--port", str(self.port)],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
        )
        return self

    async def ready(self, timeout: float = 30) -> "HubProcess":
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited: {self.log.read_text()[-3000:]}")
                try:
                    async with session.get(self.url + "/ready") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"hub on {self.port} not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig=None) -> None:
        if self.proc and self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


# --- the official JavaScript client ------------------------------------------------

JS_DIR = ROOT / "tests" / "js"


@pytest.fixture(scope="session")
def node():
    """Path to node with tests/js/node_modules installed (`npm ci --prefix tests/js`)."""
    if not (JS_DIR / "node_modules" / "socket.io-client").exists():
        _unavailable("tests/js/node_modules (run npm ci --prefix tests/js)", FileNotFoundError())
    return "node"


async def run_node(script: str, *args: str, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS_DIR / script), *args, cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}"
    return out.decode()


# --- a private Redis that a test may stop and start ---------------------------------

class PrivateRedis:
    def __init__(self, tmp_path):
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
            time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None




@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of the test's own on a free port, which it may stop and start."""
    import shutil

    if not shutil.which("redis-server"):
        _unavailable("redis-server", FileNotFoundError("not installed"))
    redis = PrivateRedis(tmp_path).start()
    yield redis
    redis.stop()


class JsDriver:
    """An official JS client in a node process, driven command by command
    (tests/js/driver.mjs), behind a proxy the test can drop and resume."""

    def __init__(self, proc):
        self.proc = proc

    async def do(self, op: str, **args):
        import json as _json

        self.proc.stdin.write((_json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        answer = _json.loads(line)
        assert answer["ok"], answer
        return answer["value"]


@pytest.fixture
async def js_driver(node):
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
