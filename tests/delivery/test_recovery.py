"""No event lost: connection state recovery with the official JS client, the
transactional outbox under SIGKILL and Redis restarts, and `sync` beyond the window."""
import asyncio
import json
import signal

import pytest

from hub.backends.bus import offset_key
from tests.support.clients import Api
from tests.support.proxy import TcpProxy
from tests.support.node import run_node
from tests.support.servers import make_settings
from tests.support.services import pg_dsn

ALL = [f"m{i}" for i in range(20)]


async def _run(mode, target1, target2, sender_url, sender, receiver, pid=None):
    args = [mode, target1, target2, sender_url, sender["access_token"], receiver["access_token"],
            str(receiver["user"]["id"])] + ([str(pid)] if pid else [])
    return json.loads(await run_node("recovery.mjs", *args, timeout=60))


def _in_order(offsets):
    return all(isinstance(o, str) for o in offsets) and sorted(offsets, key=offset_key) == offsets


async def test_recovers_on_the_embedded_default(server, api, node):
    sender, receiver = await api.user(), await api.user()
    out = await _run("same", server.url, server.url, server.url, sender, receiver)
    assert out["reasons"] == ["transport close"]
    assert out["connects"] == [{"recovered": True}] and out["recovered"] is True
    assert out["seen"] == ALL and _in_order(out["offsets"])


@pytest.mark.parametrize("mode", ["same", "other"])
async def test_recovers_exactly_the_missed_events_in_order_on_any_instance(two_hubs, node, http, mode):
    one, two = two_hubs
    api = Api(one.url, http)
    sender, receiver = await api.user(), await api.user()
    out = await _run(mode, one.url, two.url, one.url, sender, receiver)
    assert out["connects"] == [{"recovered": True}]
    assert out["seen"] == ALL  # the 10 sent while away arrived once each, in order, before the live ones
    assert _in_order(out["offsets"]) and len(set(out["offsets"])) == 20


async def test_sigterm_hands_clients_over_to_another_instance(two_hubs, node, http):
    one, two = two_hubs
    api = Api(two.url, http)
    sender, receiver = await api.user(), await api.user()
    out = await _run("sigterm", one.url, two.url, two.url, sender, receiver, pid=one.proc.pid)
    assert out["reasons"] == ["transport close"]  # not "io server disconnect": the client reconnects by itself
    assert out["connects"] == [{"recovered": True}] and out["seen"] == ALL
    assert one.proc.wait(15) == 0


async def test_a_revoked_token_is_refused_never_restored(two_hubs, node, http):
    one, two = two_hubs
    api = Api(one.url, http)
    sender, receiver = await api.user(), await api.user()
    out = await _run("revoke", one.url, two.url, one.url, sender, receiver)
    assert out["connects"] == [] and out["recovered"] is False
    assert out["connectError"]["data"] == {"code": "unauthorized", "message": "token revoked"}
    assert out["seen"] == ALL[:5]


async def test_beyond_the_window_a_new_session_catches_up_with_sync(spawn_hubs, pg_url, redis_url, redis_prefix,
                                                                   node, http):
    one, = await spawn_hubs(1, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                "HUB_REDIS_PREFIX": redis_prefix, "HUB_RECOVERY_WINDOW": "1"})
    api = Api(one.url, http)
    sender, receiver = await api.user(), await api.user()
    out = await _run("window", one.url, one.url, one.url, sender, receiver)
    assert out["connects"] == [{"recovered": False}]
    assert out["seen"] == ALL[:5] + ALL[15:]  # nothing replayed, nothing duplicated
    assert out["synced"] == ALL[:15]  # ...and `sync` brought back everything stored


# --- acknowledged writes under failures (python clients) ---------------------------------

async def _collect_messages(client, want: int, timeout: float = 30) -> list[int]:
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < want and loop.time() < deadline:
        try:
            got.append((await asyncio.wait_for(client.queue("message:new").get(), 1))["message_id"])
        except asyncio.TimeoutError:
            pass
    return got


async def _messages_before(client, marker: int) -> list[int]:
    """The messages the client gets before `marker`, one sent after those under test
    had all arrived: a duplicate of one of them would come before it."""
    got = []
    while (message_id := (await client.next("message:new", 30))["message_id"]) != marker:
        got.append(message_id)
    return got


async def test_sigkill_after_acks_loses_nothing(spawn_hubs, pg_url, private_redis, connect, http):
    """The writer is SIGKILLed right after acknowledging a burst it could not publish
    (Redis was down): the other instance's relay publishes it once Redis is back."""
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": private_redis.url, "HUB_REDIS_PREFIX": "kill"}
    one, two = await spawn_hubs(2, env)
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    sender = await connect(one.url, "/chat", a["access_token"])
    phone = await connect(two.url, "/chat", b["access_token"])
    first = await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": "before"})
    assert (await phone.next("message:new"))["message_id"] == first["id"]

    private_redis.stop()
    acked = [(await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": f"burst {i}"}))["id"]
             for i in range(30)]
    one.stop(signal.SIGKILL)
    private_redis.start()

    got = await _collect_messages(phone, len(acked))
    late = await connect(two.url, "/chat", a["access_token"])
    marker = (await late.ok("message:send", {"recipient_id": b["user"]["id"], "message": "later"}))["id"]
    got += await _messages_before(phone, marker)
    assert sorted(got) == sorted(acked)  # every acked message, exactly once
    # What the writer published, and what the relay published for it, has left the
    # outbox: nothing is relayed a second time.
    assert await _outbox_rows_once_settled(pg_url) == 0


async def _outbox_rows_once_settled(pg_url, timeout=5.0):
    import asyncpg

    conn = await asyncpg.connect(pg_dsn(pg_url))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := await conn.fetchval("SELECT count(*) FROM outbox")) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return left
    finally:
        await conn.close()


async def test_recovered_rooms_are_authorized_again(server, api, connect, js_driver):
    """A socket gets back the post rooms it watched only while it may still see the
    post, and hears what those rooms got while it was away (the deletion included)."""
    author, reader, liker = await api.user(), await api.user(), await api.user()
    ca = await connect(server.url, "/sns", author["access_token"])
    cl = await connect(server.url, "/sns", liker["access_token"])
    kept = await ca.ok("post:create", {"platforms": ["twitter"], "content": "stays"})
    gone = await ca.ok("post:create", {"platforms": ["twitter"], "content": "goes"})
    js = await js_driver()
    assert await js.do("connect", url=server.url, ns="/sns", token=reader["access_token"]) == {"recovered": False}
    for post in (kept, gone):
        assert (await js.do("call", event="post:watch", data={"post_id": post["post_id"]}))["ok"]
    await js.do("drop")
    await cl.ok("post:like", {"post_id": kept["post_id"]})
    await ca.ok("post:delete", {"post_id": gone["post_id"]})
    await js.do("resume")
    assert (await js.do("reconnected"))["recovered"] is True
    wanted = {("engagement:liked", kept["post_id"]), ("post:deleted", gone["post_id"])}
    for _ in range(100):  # replayed right after the CONNECT
        seen = {(e, d.get("post_id")) for e, d, _ in await js.do("events")}
        if wanted <= seen:
            break
        await asyncio.sleep(0.05)
    assert wanted <= seen
    rooms = server.hub.sio.manager.rooms["/sns"]
    assert len(rooms.get(f"post:{kept['post_id']}", {})) == 1
    assert len(rooms.get(f"post:{gone['post_id']}", {})) == 0
    await js.do("close")


async def test_recovery_racing_a_steady_sender_loses_doubles_and_reorders_nothing(spawn_hubs, pg_url, redis_url,
                                                                                 redis_prefix, node, http):
    """The receiver is dropped 25 times while four sends are always in flight on the
    other instance; every reconnect recovers, and it gets every acked message once,
    in offset order (events published while it reconnects included)."""
    one, two = await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                    "HUB_REDIS_PREFIX": redis_prefix, "HUB_EVENT_RATE": "1000",
                                    "HUB_EVENT_BURST": "1000", "HUB_USER_OP_LIMIT": "100000"})
    api = Api(one.url, http)
    sender, receiver = await api.user(), await api.user()
    out = json.loads(await run_node("recovery_race.mjs", two.url, one.url, sender["access_token"],
                                    receiver["access_token"], str(receiver["user"]["id"]), "25", timeout=120))
    assert out["connects"] == [True] * 25
    ids = [message_id for message_id, _ in out["got"]]
    assert len(ids) == len(set(ids))  # nothing twice
    assert sorted(ids) == sorted(out["acked"])  # nothing lost
    assert _in_order([offset for _, offset in out["got"]])  # nothing overtaken


async def test_other_users_traffic_does_not_refuse_a_recovery(start_server, tmp_path, http, connect, js_driver):
    """The replay limit counts the socket's own events: other users' 240 events while
    it is away (more than HUB_MAX_REPLAY, here 50) do not cost it its session."""
    server = await start_server(make_settings(tmp_path, max_replay=50, event_rate=1000.0, event_burst=1000))
    api = Api(server.url, http)
    me, friend, x, y = [await api.user() for _ in range(4)]
    js = await js_driver()
    assert await js.do("connect", url=server.url, ns="/chat", token=me["access_token"]) == {"recovered": False}
    await js.do("drop")
    busy = await connect(server.url, "/chat", x["access_token"])
    for i in range(80):  # three events each in the namespace's log
        await busy.ok("message:send", {"recipient_id": y["user"]["id"], "message": f"busy {i}"})
    mine = await connect(server.url, "/chat", friend["access_token"])
    sent = [(await mine.ok("message:send", {"recipient_id": me["user"]["id"], "message": f"hi {i}"}))["id"]
            for i in range(3)]
    await js.do("resume")
    assert (await js.do("reconnected"))["recovered"] is True
    for _ in range(100):  # replayed right after the CONNECT
        got = [d["message_id"] for e, d, _ in await js.do("events") if e == "message:new"]
        if len(got) >= 3:
            break
        await asyncio.sleep(0.05)
    assert got == sent
    await js.do("close")


async def _one_thread_through_a_fault(one, two, http, connect, n: int, fault, repair, down: float) -> None:
    """n messages to one thread, one at a time, alternately on each instance (their
    acked ids are the order the writes committed), with `fault()` for `down`
    seconds meanwhile: each device gets every message once, in that order."""
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    senders = [await connect(one.url, "/chat", a["access_token"]), await connect(two.url, "/chat", a["access_token"])]
    devices = [await connect(one.url, "/chat", b["access_token"]), await connect(two.url, "/chat", b["access_token"])]

    async def traffic():
        ids = []
        for i in range(n):
            reply = await senders[i % 2].ok("message:send", {"recipient_id": b["user"]["id"], "message": f"t{i}"})
            ids.append(reply["id"])
            await asyncio.sleep(0.02)
        return ids

    task = asyncio.create_task(traffic())
    await asyncio.sleep(0.5)
    fault()
    await asyncio.sleep(down)
    repair()
    acked = await task
    got = [await _collect_messages(device, len(acked)) for device in devices]
    marker = (await senders[0].ok("message:send", {"recipient_id": b["user"]["id"], "message": "later"}))["id"]
    for device, ids in zip(devices, got):
        assert ids + await _messages_before(device, marker) == acked


async def test_a_redis_restart_keeps_each_threads_commit_order(spawn_hubs, pg_url, private_redis, connect, http):
    """Messages of one thread written on two instances, before, during and after a
    Redis restart: each device gets every one once, in the order they were written
    (those written during the outage were not overtaken by newer ones)."""
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": private_redis.url, "HUB_REDIS_PREFIX": "order",
           "HUB_EVENT_RATE": "1000", "HUB_EVENT_BURST": "1000"}
    one, two = await spawn_hubs(2, env)
    await _one_thread_through_a_fault(one, two, http, connect, 90, private_redis.stop, private_redis.start, 1.0)


async def test_a_partition_between_an_instance_and_redis_keeps_each_threads_commit_order(
        spawn_hubs, pg_url, private_redis, connect, http):
    """One instance loses Redis for a while (the other does not) while a thread is
    written alternately on both: each device gets every message once, in commit order."""
    link = await TcpProxy(("127.0.0.1", private_redis.port)).start()
    env = {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_PREFIX": "cut", "HUB_EVENT_RATE": "1000", "HUB_EVENT_BURST": "1000"}
    one, = await spawn_hubs(1, {**env, "HUB_REDIS_URL": f"redis://127.0.0.1:{link.port}/0"})
    two, = await spawn_hubs(1, {**env, "HUB_REDIS_URL": private_redis.url})
    try:
        await _one_thread_through_a_fault(one, two, http, connect, 120, link.cut, link.heal, 1.5)
    finally:
        await link.close()


async def test_a_recovery_while_the_bus_is_away_gets_each_event_once(spawn_hubs, private_redis, connect, js_driver,
                                                                     http):
    """A client recovers on an instance whose bus subscription is down (Redis came
    back, the subscription not yet): the replay sends it an event from the log, and
    when the bus is back the instance catches up with that same event. The client
    gets it once (issue 17: alerts and messages arrived twice after Redis restarts)."""
    import msgpack
    import redis.asyncio as aioredis

    hub, = await spawn_hubs(1, {"HUB_REDIS_URL": private_redis.url, "HUB_REDIS_PREFIX": "dup"})
    api = Api(hub.url, http)
    a, b = await api.user(), await api.user()
    sender = await connect(hub.url, "/chat", a["access_token"])
    js = await js_driver()
    await js.do("connect", url=hub.url, ns="/chat", token=b["access_token"])

    async def send(text: str) -> int:
        return (await sender.ok("message:send", {"recipient_id": b["user"]["id"], "message": text}))["id"]

    async def received(until: int) -> list[int]:
        for _ in range(300):
            got = [d["message_id"] for e, d, _ in await js.do("events") if e == "message:new"]
            if until in got:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"message {until} never arrived: {got}")

    first = await send("before")
    await received(first)
    await js.do("drop")
    admin = aioredis.from_url(private_redis.url)
    try:
        # The hub's bus connection is cut, and may not come back until allowed again;
        # its other commands (appends, replays) work.
        await admin.execute_command("ACL", "SETUSER", "default", "-subscribe")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        missed = await send("while the bus is away")  # appended by the outbox relay
        for _ in range(200):
            logged = [msgpack.unpackb(f[b"e"]) for _, f in await admin.xrange("{dup:bus}:log:/chat")]
            if any(e["ev"] == "message:new" and e["d"]["message_id"] == missed for e in logged):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the relay did not append the message")
        await js.do("resume")
        assert (await js.do("reconnected"))["recovered"] is True
        await received(missed)  # replayed
        await admin.execute_command("ACL", "SETUSER", "default", "+subscribe")
    finally:
        await admin.aclose()
    last = await send("after")  # on the bus after its catch-up
    assert await received(last) == [first, missed, last]
    await js.do("close")
