"""An instance reads from Redis only what its own sockets need (issue 24, part 1):
the channels of the rooms it has a socket in, beside the common one. On a real
Redis and a real Redis Cluster; what must not arrive is proven by a later message
that arrives after it would have (one connection reads every channel in order)."""
from __future__ import annotations

import asyncio

import pytest

from hub.backends.bus.redis import RedisBroker
from tests.support.bus import broker_pair
from tests.support.business import service_token
from tests.support.clients import Api
from tests.support.servers import make_settings


@pytest.fixture(params=["redis", "cluster"])
async def pair(request):
    made = broker_pair(request, request.param)
    yield made
    for broker in made:
        await broker.stop()


async def _inbox(broker: RedisBroker, *rooms: str) -> asyncio.Queue:
    inbox: asyncio.Queue = asyncio.Queue()

    async def handler(message):
        await inbox.put(message)

    await broker.start(handler)
    for room in rooms:
        await _join(broker, room)
    return inbox


async def _join(broker: RedisBroker, room: str) -> None:
    broker.subscribe("/chat", room)
    await broker.subscribed("/chat", room)


def _entry(event_id: int, *rooms: str, event: str = "e") -> dict:
    return {"ns": "/chat", "ev": event, "d": {"n": event_id}, "r": list(rooms), "s": None, "id": event_id}


async def _next(inbox: asyncio.Queue) -> dict:
    return await asyncio.wait_for(inbox.get(), 5)


async def test_an_instance_gets_only_the_rooms_it_has_sockets_in(pair):
    a, b = pair
    await _inbox(a, "room:x", "room:y")
    inbox = await _inbox(b, "room:x")
    await a.append("o", [_entry(1, "room:y")])
    await a.append("o", [_entry(2, "room:x"), _entry(3, "room:y"), _entry(4, "room:x", "room:y")])
    await a.publish({"t": "emit", "n": "y"}, ("/chat", ["room:y"]))
    await a.publish({"t": "emit", "n": "x"}, ("/chat", ["room:x"]))
    await a.publish({"t": "revoke", "n": "all"})  # no rooms: every instance
    got = [await _next(inbox) for _ in range(4)]
    # Entries 1 and 3 (room y only) never came: 2 and 4 came, each in its own run
    # (one message per run of entries with one route, in offset order).
    assert [[e["id"] for e in m["e"]] for m in got[:2]] == [[2], [4]]
    assert [m["n"] for m in got[2:]] == ["x", "all"]
    assert inbox.empty()


async def test_a_message_for_several_rooms_is_handled_once_in_offset_order(pair):
    a, b = pair
    await _inbox(a)
    inbox = await _inbox(b, "room:x", "room:y")
    await a.publish({"t": "emit", "n": 1}, ("/chat", ["room:x", "room:y"]))
    await a.publish({"t": "emit", "n": 2}, ("/chat", ["room:y"]))
    assert [(await _next(inbox))["n"] for _ in range(2)] == [1, 2]
    # Durable entries of several rooms come once per channel (the fan-out drops the
    # copy by event id), and the runs keep offset order across the rooms.
    offsets = await a.append("o", [_entry(5, "room:x"), _entry(6, "room:y"), _entry(7, "room:x")])
    got = [(m["x"], [e["id"] for e in m["e"]]) for m in [await _next(inbox) for _ in range(3)]]
    assert got == [([offsets[0]], [5]), ([offsets[1]], [6]), ([offsets[2]], [7])]


async def test_a_room_left_stops_arriving_and_one_joined_starts(pair):
    a, b = pair
    await _inbox(a)
    inbox = await _inbox(b, "room:x")
    await a.publish({"t": "emit", "n": 1}, ("/chat", ["room:x"]))
    assert (await _next(inbox))["n"] == 1
    b.unsubscribe("/chat", "room:x")
    await _join(b, "room:z")  # sent after the UNSUBSCRIBE, on the same connection
    await a.publish({"t": "emit", "n": 2}, ("/chat", ["room:x"]))
    await a.publish({"t": "emit", "n": 3}, ("/chat", ["room:z"]))
    assert (await _next(inbox))["n"] == 3
    assert sorted(b.channels.wanted) == [b.channels.of_room("/chat", "room:z")]


async def test_events_every_instance_acts_on_reach_it_without_rooms(pair):
    """A durable event an instance itself listens to (Fanout.listen: widget origins
    follow assistant:changed) goes to every instance, whatever its rooms."""
    a, b = pair
    await _inbox(a)
    inbox = await _inbox(b)
    a.everywhere("/chat", "changed")
    await a.append("o", [_entry(8, "room:elsewhere"), _entry(9, "room:elsewhere", event="changed")])
    assert [e["id"] for e in (await _next(inbox))["e"]] == [9]


async def test_a_resubscription_after_a_lost_connection_keeps_the_rooms(redis_url, redis_prefix):
    """The bus connection is cut: the new one reads the same room channels, and what
    was logged for them meanwhile comes from the catch-up."""
    from tests.support.proxy import TcpProxy

    link = await TcpProxy(("127.0.0.1", int(redis_url.rsplit(":", 1)[1].split("/")[0]))).start()
    cut = RedisBroker.from_url(f"redis://127.0.0.1:{link.port}/0", redis_prefix)
    other = RedisBroker.from_url(redis_url, redis_prefix)
    try:
        await _inbox(other)
        inbox = await _inbox(cut, "room:x")
        link.cut()
        for _ in range(100):
            if not cut.healthy:
                break
            await asyncio.sleep(0.05)
        assert not cut.healthy
        await other.append("o", [_entry(10, "room:x")])  # while cut off
        link.heal()
        assert [e["id"] for e in (await asyncio.wait_for(inbox.get(), 15))["e"]] == [10]
        await other.append("o", [_entry(11, "room:y"), _entry(12, "room:x")])
        assert [e["id"] for e in (await _next(inbox))["e"]] == [12]
    finally:
        await cut.stop()
        await other.stop()
        await link.close()


async def test_instances_without_the_rooms_read_almost_nothing(start_server, tmp_path, redis_url, redis_prefix,
                                                               http, connect):
    """Three hubs on one Redis. Notifications to a user whose sockets are all on the
    first hub: the second hub (another user's) reads next to nothing of them from
    Redis. Its later notice to everyone arrives after them, so they had their chance."""
    hubs = [await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
            for _ in range(2)]
    api = Api(hubs[0].url, http)
    ann, bob = await api.user(), await api.user()
    ann_socket = await connect(hubs[0].url, "/notifications", ann["access_token"])
    bob_socket = await connect(hubs[1].url, "/notifications", bob["access_token"])
    before = [h.hub.broker.received_bytes for h in hubs]
    body = {"title": "x" * 200, "message": "y" * 800, "type": "lesson"}
    for i in range(40):
        status, _ = await api.request("POST", "/api/notifications", token=service_token(),
                                      json={"user_id": ann["user"]["id"], **body})
        assert status == 201
    for _ in range(40):
        await ann_socket.next("push:received")
    status, _ = await api.request("POST", "/api/publish", token=service_token(), json={
        "namespace": "/notifications", "event": "alert:triggered", "to": {"everyone": True},
        "data": {"alert_id": "last", "severity": "info", "message": "after the rest"}})
    assert status == 200
    assert (await bob_socket.next("alert:triggered"))["alert_id"] == "last"
    assert bob_socket.queue("push:received").empty()
    read = [h.hub.broker.received_bytes - b for h, b in zip(hubs, before)]
    assert read[0] > 40 * 1000  # Ann's hub read each notification, 1 KB and more
    assert read[1] < read[0] / 10, read


async def test_interest_subscribes_on_the_first_holder_and_lets_go_after_the_linger(redis_url, redis_prefix):
    """hub/delivery/interest.py: holders (the Socket.IO managers, the plain members)
    report rooms filling and emptying; the channel is read while any holder has the
    room, and for `linger` seconds after the last let go, so a quick return costs no
    resubscription."""
    from hub.delivery.interest import Interest

    broker = RedisBroker.from_url(redis_url, redis_prefix)
    try:
        await _inbox(broker)
        interest = Interest(broker, linger=0.2)
        channel = broker.channels.of_room("/chat", "room:x")
        interest.occupied("/chat", "room:x")  # one manager's first socket there
        interest.occupied("/chat", "room:x")  # the plain members' first
        await interest.ready("/chat", "room:x")
        assert broker.channels.wanted[channel].done()
        assert (await broker.redis.pubsub_numsub(channel))[0][1] == 1
        interest.vacated("/chat", "room:x")
        await asyncio.sleep(0.3)
        assert channel in broker.channels.wanted  # one holder is left
        interest.vacated("/chat", "room:x")
        interest.occupied("/chat", "room:x")  # back within the linger: kept as it was
        confirmed = broker.channels.wanted[channel]
        await asyncio.sleep(0.3)
        assert broker.channels.wanted[channel] is confirmed
        interest.vacated("/chat", "room:x")
        for _ in range(50):
            if channel not in broker.channels.wanted:
                break
            await asyncio.sleep(0.05)
        assert channel not in broker.channels.wanted
        for _ in range(50):  # and Redis has it unsubscribed
            if (await broker.redis.pubsub_numsub(channel))[0][1] == 0:
                break
            await asyncio.sleep(0.05)
        assert (await broker.redis.pubsub_numsub(channel))[0][1] == 0
        await interest.stop()
    finally:
        await broker.stop()


async def test_what_is_published_right_after_a_join_arrives(pair):
    """`subscribed` returns once Redis confirmed the room's channel, so a message
    published by another instance the moment the join returns is never lost to the
    subscription still on its way (a join of a socket waits the same way)."""
    a, b = pair
    await _inbox(a)
    inbox = await _inbox(b)
    for n in range(30):
        await _join(b, f"room:new-{n}")
        await a.publish({"t": "emit", "n": n}, ("/chat", [f"room:new-{n}"]))
    assert [(await _next(inbox))["n"] for _ in range(30)] == list(range(30))


async def test_a_hub_reads_the_rooms_of_its_sockets_of_every_transport(start_server, tmp_path, redis_url,
                                                                       redis_prefix, http, connect):
    """A Socket.IO client and a plain WebSocket of one user on a hub: the user's room
    and `everyone` are read while either is there, and let go (after the linger) only
    when both have left."""
    from tests.support.gateways import Plain

    server = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    broker, interest = server.hub.broker, server.hub.fanout.interest
    ann = await Api(server.url, http).user()
    rooms = [("/notifications", f"user:{ann['user']['id']}"), ("/notifications", "everyone")]
    channels = [broker.channels.of_room(*key) for key in rooms]
    socket = await connect(server.url, "/notifications", ann["access_token"])
    plain = await Plain.open(http, f"{server.url}/ws?ns=/notifications&token={ann['access_token']}")
    await plain.frame()  # welcome: attached, its rooms joined
    assert all(broker.channels.wanted[c].done() for c in channels)
    assert [interest.held(*key) for key in rooms] == [2, 2]  # the Socket.IO manager and the plain members
    await socket.sio.disconnect()
    for _ in range(100):
        if interest.held(*rooms[0]) == 1:
            break
        await asyncio.sleep(0.02)
    assert [interest.held(*key) for key in rooms] == [1, 1]
    await plain.close()
    for _ in range(100):
        if not interest.held(*rooms[0]):
            break
        await asyncio.sleep(0.02)
    assert all(not interest.held(*key) and interest.lingering(*key) for key in rooms)
    assert all(c in broker.channels.wanted for c in channels)  # still read, for the linger
