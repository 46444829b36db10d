"""Faults, with real processes: `hub serve` instances on a throwaway PostgreSQL and a
private redis-server, clients behind a TCP proxy, and each fault made for real
(pg_ctl stop, redis-server restarts, a blackholed link, SIGTERM, SIGKILL).
The harness is tests/support/faults.py; docs/recovery.md ("Measured under faults")
says what is asserted and why."""
from __future__ import annotations

import asyncio
import secrets
import signal
import time
from dataclasses import dataclass

import asyncpg
import pytest

from storage.db import Database
from tests.support.business import service_token
from tests.support.clients import Api
from tests.support.dialogs import account
from tests.support.services import pg_dsn, unavailable
from tests.support.faults import Load, Pair, RedisServer, ThrowawayPostgres, Verdict, postgres_available
from tests.support.proxy import TcpProxy

LOAD_ENV = {"HUB_EVENT_RATE": "1000", "HUB_EVENT_BURST": "2000", "HUB_REGISTER_PER_MINUTE": "10000",
            "HUB_LOGIN_PER_MINUTE": "10000"}


@pytest.fixture(scope="module")
def throwaway_pg():
    """A PostgreSQL of this module's own, which its tests may stop and start."""
    import shutil

    if not postgres_available() or not shutil.which("runuser"):
        unavailable("initdb/pg_ctl", FileNotFoundError("PostgreSQL server binaries"))
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
        unavailable("redis-server", FileNotFoundError("not installed"))
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


# --- item 7: shutdown is bounded and says what it waits for --------------------------------

async def _chatters(url: str, db_url: str, connect, n: int) -> tuple[list, list[int]]:
    db = Database(db_url)
    try:
        people = [await account(db) for _ in range(n)]
    finally:
        await db.close()
    clients = [await connect(url, "/chat", token) for _, token in people]
    return clients, [uid for uid, _ in people]


async def _send_forever(client, to: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await client.call("message:send", {"recipient_id": to, "message": "load"}, timeout=5)
        except Exception:
            return  # the instance went away under it
        await asyncio.sleep(0.02)


async def test_sigterm_under_load_ends_within_the_bound_and_logs_each_step(fault_db, spawn_hubs, connect,
                                                                           redis_servers):
    redis = redis_servers()
    hub, = await spawn_hubs(1, {"HUB_DATABASE_URL": fault_db, "HUB_REDIS_URL": redis.url,
                                "HUB_SHUTDOWN_TIMEOUT": "8", **LOAD_ENV})
    clients, ids = await _chatters(hub.url, fault_db, connect, 6)
    stop = asyncio.Event()
    load = [asyncio.create_task(_send_forever(c, ids[(i + 1) % len(ids)], stop)) for i, c in enumerate(clients)]
    await asyncio.sleep(1)
    hub.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(hub.proc.wait, 8 + 5)
    finally:
        stop.set()
        await asyncio.gather(*load)
    log = hub.log.read_text()
    assert code == 0, log[-3000:]
    for step in ("closing 6 client connections", "open requests and websockets", "periodic jobs",
                 "the outbox relay", "closing the bus", "closing the database", "shutdown: complete in"):
        assert step in log, (step, log[-3000:])


async def test_sigterm_with_a_hung_database_ends_at_the_bound_and_says_what_hung(throwaway_pg, fault_db,
                                                                                spawn_hubs, connect, proxies):
    """A partitioned database hangs the outbox's last flush: the watchdog ends the
    process at the bound, naming the step."""
    proxy = await proxies(throwaway_pg.port)
    through_proxy = fault_db.replace(f":{throwaway_pg.port}/", f":{proxy.port}/")
    hub, = await spawn_hubs(1, {"HUB_DATABASE_URL": through_proxy, "HUB_SHUTDOWN_TIMEOUT": "4", **LOAD_ENV})
    clients, ids = await _chatters(hub.url, fault_db, connect, 2)
    await clients[0].ok("message:send", {"recipient_id": ids[1], "message": "before"})
    proxy.blackhole()
    in_flight = asyncio.create_task(clients[0].call("message:send", {"recipient_id": ids[1], "message": "hung"},
                                                    timeout=30))
    await asyncio.sleep(0.5)
    hub.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(hub.proc.wait, 4 + 6)
    in_flight.cancel()
    await asyncio.gather(in_flight, return_exceptions=True)
    log = hub.log.read_text()
    assert code == 1, log[-3000:]
    assert "shutdown: still waiting for" in log and "exiting now" in log, log[-3000:]


# --- item 9: a SIGKILLed instance's operators are offline, and requeued, within seconds -----

async def test_operators_of_a_killed_instance_are_requeued_within_seconds_unless_they_come_back(
        fault_db, spawn_hubs, redis_servers, connect, http):
    """Default presence settings. Two operators hold a dialog each, their consoles on
    the instance that is SIGKILLed: the one whose console comes back (on the other
    instance, as the official client does) keeps the dialog and never flaps; the
    other is offline and their dialog requeued well before the old 86 s."""
    from tests.support.dialogs import assistant, next_where, visitor

    redis = redis_servers()
    doomed, survivor = await spawn_hubs(2, {"HUB_DATABASE_URL": fault_db, "HUB_REDIS_URL": redis.url,
                                            "HUB_WIDGET_SESSIONS_PER_MINUTE": "1000", **LOAD_ENV})
    db = Database(fault_db)
    try:
        _, owner = await account(db)
        _, watcher_token = await account(db, "operator")
        (back_id, back_token), (gone_id, gone_token) = await account(db, "operator"), await account(db, "operator")
    finally:
        await db.close()
    api = Api(survivor.url, http)
    a = await assistant(api, owner)
    watcher = await connect(survivor.url, "/operators", watcher_token)
    consoles, dialogs = {}, {}
    for op, token in ((back_id, back_token), (gone_id, gone_token)):
        consoles[op] = await connect(doomed.url, "/operators", token)
        await next_where(watcher, "presence:changed", lambda e, op=op: e["operator_id"] == op and e["status"] == "online")
        v = await visitor(api, a["id"])
        vis = await connect(survivor.url, "/dialogs", v["visitor_token"])
        await vis.ok("dialog:handoff", {"dialog_id": v["dialog_id"], "reason": "human please"})
        await consoles[op].ok("handoff:accept", {"dialog_id": v["dialog_id"]})
        dialogs[op] = v["dialog_id"]

    doomed.stop(signal.SIGKILL)
    killed = time.monotonic()
    await connect(survivor.url, "/operators", back_token)  # the console that comes back
    offline = await next_where(watcher, "presence:changed", lambda e: e["status"] == "offline", timeout=30)
    requeued = await next_where(watcher, "handoff:requested", lambda e: e["reason"] == "operator_offline",
                                timeout=30)
    took = time.monotonic() - killed
    # The first offline announced is the operator who did not come back: the other's
    # would have been announced at the same moment (both consoles died together).
    assert offline["operator_id"] == gone_id and requeued["dialog_id"] == dialogs[gone_id]
    assert took < 15, f"offline and requeued {took:.1f} s after the instance died"
    st = await watcher.ok("handoff:status", {"dialog_id": dialogs[back_id]})
    assert (st["status"], st["operator_id"]) == ("active", back_id)
    assert (await watcher.ok("presence:status", {"operator_id": back_id}))["status"] == "online"


# --- item 8: a blackholed link to Redis is noticed fast, and loses nothing -----------------

async def test_blackholed_redis_link_stalls_acks_briefly_and_loses_nothing(fault_db, spawn_hubs, redis_servers,
                                                                           proxies, connect):
    redis = redis_servers()
    link = await proxies(redis.port)
    env = {"HUB_DATABASE_URL": fault_db, **LOAD_ENV}
    cut, = await spawn_hubs(1, {**env, "HUB_REDIS_URL": f"redis://127.0.0.1:{link.port}/0"})
    other, = await spawn_hubs(1, {**env, "HUB_REDIS_URL": redis.url})
    db = Database(fault_db)
    try:
        (_, sender_token), (receiver, receiver_token) = await account(db), await account(db)
    finally:
        await db.close()
    sender = await connect(cut.url, "/chat", sender_token)
    reader = await connect(other.url, "/chat", receiver_token)
    acked = []

    async def send(text: str) -> None:
        # Bounded: before, each ack waited ~5 s for redis-py's default socket timeout.
        reply = await sender.call("message:send", {"recipient_id": receiver, "message": text}, timeout=3.5)
        assert reply["ok"], reply
        acked.append(reply["data"]["id"])

    for i in range(10):
        await send(f"before {i}")
    link.blackhole()
    for i in range(60):  # ~6 s of a partition between `cut` and Redis
        await send(f"during {i}")
        await asyncio.sleep(0.1)
    link.heal()
    for i in range(10):
        await send(f"after {i}")
    # The receiver, on the other side, gets every acked message once (the relay
    # publishes what `cut` could not), the last one proving nothing else is coming.
    got = []
    while len(got) < len(acked):
        got.append((await reader.next("message:new", timeout=30))["message_id"])
    assert sorted(got) == sorted(acked) and len(set(got)) == len(got)


# --- the fault scenarios: three instances under load, one fault each -------------------------

PAIRS = 12  # senders, each writing one direct thread to its receiver
RATE = 200.0  # message:send per second, all senders together (as in the issue)
PUBLISH_RATE = 20.0  # POST /api/publish per second
ABSENCE = 30.0  # seconds a third of the receivers are away (inside the 120 s window)


@dataclass
class Cluster:
    hubs: list
    redis: RedisServer
    redis_link: TcpProxy  # between hubs[0] and Redis
    balancers: list[TcpProxy]  # in front of the receivers, one per instance at first
    load: Load

    def port(self, i: int) -> int:
        return self.hubs[i % len(self.hubs)].port


async def _cluster(pg_url: str, spawn_hubs, redis: RedisServer, proxies) -> Cluster:
    link = await proxies(redis.port)
    env = {"HUB_DATABASE_URL": pg_url, **LOAD_ENV}
    hubs = await spawn_hubs(1, {**env, "HUB_REDIS_URL": f"redis://127.0.0.1:{link.port}/0"})
    hubs += await spawn_hubs(2, {**env, "HUB_REDIS_URL": redis.url})
    db = Database(pg_url)
    try:
        people = [await account(db) for _ in range(2 * PAIRS)]
    finally:
        await db.close()
    pairs = [Pair(s, st, r, rt) for (s, st), (r, rt) in zip(people[::2], people[1::2])]
    balancers = [await proxies(hub.port) for hub in hubs]
    load = Load([h.url for h in hubs], pairs, service_token(), rate=RATE, publish_rate=PUBLISH_RATE)
    await load.start_receivers([b.url for b in balancers])
    return Cluster(hubs, redis, link, balancers, load)


async def _churn(c: Cluster) -> None:
    """Reconnects racing recovery: every 1.5 s one balancer drops its clients and
    sends them to another instance, while messages keep coming."""
    for r in range(8):
        balancer = c.balancers[r % 3]
        balancer.route(("127.0.0.1", c.port(r + 1 + r // 3)))
        balancer.drop()
        await asyncio.sleep(1.5)


async def _absence(c: Cluster) -> None:
    """A third of the receivers away for ABSENCE seconds, well inside the window."""
    c.balancers[0].refuse()
    c.balancers[0].drop()
    await asyncio.sleep(ABSENCE)
    c.balancers[0].accept()


async def _redis_restart(c: Cluster) -> None:
    """Redis restarts, and every receiver reconnects at that moment: with AOF its
    session is still there (recovered); without, it is gone and the receiver
    catches up with `sync`."""
    c.redis.stop()
    await asyncio.sleep(2)
    c.redis.start()
    for balancer in c.balancers:
        balancer.drop()


async def _partition(c: Cluster) -> None:
    """hubs[0] cut off from Redis (nothing forwarded, nothing closed) for 6 s."""
    c.redis_link.blackhole()
    await asyncio.sleep(6)
    c.redis_link.heal()


async def _rolling_sigterm(c: Cluster) -> None:
    """Each instance in turn: its receivers sent to the next one, SIGTERM, restart."""
    for i, hub in enumerate(c.hubs):
        for balancer in c.balancers:
            if balancer.target[1] == hub.port:
                balancer.route(("127.0.0.1", c.port(i + 1)))
        await asyncio.to_thread(hub.stop, signal.SIGTERM)
        hub.start()
        await hub.ready()


async def _run(c: Cluster, fault) -> Verdict:
    c.load.start()
    try:
        await asyncio.sleep(3)
        await fault(c)
        await asyncio.sleep(2)
        await c.load.stop()
        report = await c.load.settle(timeout=15)
        return await c.load.verdict(report, c.hubs[1].url)
    finally:
        await c.load.close()


def _assert_nothing_lost(v: Verdict) -> None:
    assert v.acked > 0 and v.published > 0, v
    assert v.lost == 0, v
    assert v.duplicates == 0 and v.publish_duplicates == 0, v
    assert v.out_of_order == 0, v
    assert v.publishes_lost == 0, v
    assert v.sync_unended == 0, v
    assert not {"internal_error", "publish 500"} & set(v.errors), v  # outages are `unavailable`


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", [
    "reconnect churn", "30 s absence", "redis restart without AOF", "redis restart with AOF",
    "partition from redis", "postgres stop", "rolling sigterm"])
async def test_nothing_acked_is_lost_doubled_or_reordered(fault, throwaway_pg, fault_db, spawn_hubs, redis_servers,
                                                         proxies):
    redis = redis_servers(aof=fault == "redis restart with AOF")
    c = await _cluster(fault_db, spawn_hubs, redis, proxies)

    async def postgres_stop(_):
        throwaway_pg.stop()
        await asyncio.sleep(3)
        throwaway_pg.start()

    faults = {"reconnect churn": _churn, "30 s absence": _absence, "redis restart without AOF": _redis_restart,
              "redis restart with AOF": _redis_restart, "partition from redis": _partition,
              "postgres stop": postgres_stop, "rolling sigterm": _rolling_sigterm}
    verdict = await _run(c, faults[fault])
    print(f"{fault}: {verdict}")
    _assert_nothing_lost(verdict)
