"""Faults, with real processes: `hub serve` instances on a throwaway PostgreSQL and a
private redis-server, clients behind a TCP proxy, and each fault made for real
(pg_ctl stop, redis-server restarts, a blackholed link, SIGTERM, SIGKILL).
The harness is tests/fault_harness.py; docs/recovery.md ("Measured under faults")
says what is asserted and why."""
from __future__ import annotations

import asyncio
import secrets
import signal
import time

import asyncpg
import pytest

from storage.db import Database
from tests.business_helpers import service_token
from tests.conftest import Api, _unavailable, pg_dsn
from tests.dialog_helpers import account
from tests.fault_harness import RedisServer, TcpProxy, ThrowawayPostgres, postgres_available

LOAD_ENV = {"HUB_EVENT_RATE": "1000", "HUB_EVENT_BURST": "2000", "HUB_REGISTER_PER_MINUTE": "10000",
            "HUB_LOGIN_PER_MINUTE": "10000"}


@pytest.fixture(scope="module")
def throwaway_pg():
    """A PostgreSQL of this module's own, which its tests may stop and start."""
    import shutil

    if not postgres_available() or not shutil.which("runuser"):
        _unavailable("initdb/pg_ctl", FileNotFoundError("PostgreSQL server binaries"))
    pg = ThrowawayPostgres().init()
    yield pg
    pg.destroy()


@pytest.fixture
async def fault_db(throwaway_pg):
    """A fresh database on the throwaway PostgreSQL: its SQLAlchemy URL."""
    name = f"hub_fault_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_dsn(throwaway_pg.url), timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield throwaway_pg.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def redis_servers():
    """Factory: redis_servers(aof=False) -> a started private redis-server."""
    import shutil

    if not shutil.which("redis-server"):
        _unavailable("redis-server", FileNotFoundError("not installed"))
    started: list[RedisServer] = []

    def start(aof: bool = False) -> RedisServer:
        server = RedisServer(aof=aof).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.destroy()


@pytest.fixture
async def proxies():
    """Factory: proxies(port) -> a started TcpProxy to 127.0.0.1:port."""
    started: list[TcpProxy] = []

    async def start(port: int) -> TcpProxy:
        proxy = await TcpProxy(("127.0.0.1", port)).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()


# --- item 6: a PostgreSQL outage is `unavailable`, never `internal_error` ----------------

async def test_postgres_outage_answers_unavailable_on_every_path(throwaway_pg, fault_db, spawn_hubs, connect,
                                                                 http):
    hub, = await spawn_hubs(1, {"HUB_DATABASE_URL": fault_db, **LOAD_ENV})
    db = Database(fault_db)
    try:
        (alice, alice_token), (bob, _) = await account(db), await account(db)
    finally:
        await db.close()
    api = Api(hub.url, http)
    chat = await connect(hub.url, "/chat", alice_token)
    await chat.ok("message:send", {"recipient_id": bob, "message": "before"})
    publish = {"namespace": "/orders", "event": "invoice:generated", "to": {"user_ids": [alice]},
               "data": {"order_id": 1, "invoice_id": 1, "pdf_url": "https://billing.example/1.pdf"}}
    status, body = await api.request("POST", "/api/publish", token=service_token(), json=publish)
    assert status == 200, body

    throwaway_pg.stop()
    try:
        # socket acks, one alone and many sharing the group commit of message:send
        replies = await asyncio.gather(*(chat.call("message:send", {"recipient_id": bob, "message": f"m{i}"})
                                         for i in range(20)))
        assert {r["error"]["code"] for r in replies if not r["ok"]} == {"unavailable"}, replies
        assert not any(r["ok"] for r in replies)
        assert await chat.error("threads:list") == "unavailable"
        # HTTP: an operation's route and the publish route, 503 with the contract's body
        status, body = await api.request("GET", "/api/assistants", token=alice_token)
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
        status, body = await api.request("POST", "/api/publish", token=service_token(), json=publish)
        assert (status, body["error"]["code"]) == (503, "unavailable"), body
    finally:
        throwaway_pg.start()
    # back: the same socket and routes work again
    await chat.ok("message:send", {"recipient_id": bob, "message": "after"})
    status, body = await api.request("POST", "/api/publish", token=service_token(), json=publish)
    assert status == 200, body
