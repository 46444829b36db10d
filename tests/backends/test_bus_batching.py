"""Volatile messages between instances go out in batches (hub/backends/bus/redis.py): whatever
is published while the previous PUBLISH is on its way shares the next one. These
tests check that batching keeps every message, in order, on a real Redis."""
import asyncio

import msgpack
import redis.asyncio as aioredis
import socketio

from handlers.context import Outgoing
from hub.backends.bus import BrokerUnavailable, codec
from hub.backends.bus.redis import RedisBroker
from engine import NotepackPacket
from tests.support.clients import Api
from tests.support.servers import make_settings
from tests.support.teardown import bounded


async def _raw_messages(redis_url: str, channel: str):
    """A plain redis-py subscriber: what the channel carried, PUBLISH by PUBLISH."""
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    await pubsub.get_message(timeout=1)  # the subscription's confirmation
    return client, pubsub


async def test_concurrent_publishes_arrive_in_order_in_fewer_publishes(redis_url, redis_prefix):
    a, b = RedisBroker.from_url(redis_url, redis_prefix), RedisBroker.from_url(redis_url, redis_prefix)
    inboxes = {a: [], b: []}
    for broker, inbox in inboxes.items():
        async def handler(message, inbox=inbox):
            inbox.append(message)
        await broker.start(handler)
    client, pubsub = await _raw_messages(redis_url, "{" + f"{redis_prefix}:bus" + "}")
    try:
        messages = [{"t": "emit", "o": "x", "n": i, "d": {"text": "é" * (i % 7)}} for i in range(500)]
        # Published all at once (one loop iteration), then in waves while earlier
        # batches are on their way: every publisher returns once its batch is out.
        await asyncio.gather(*(a.publish(m) for m in messages[:200]))
        waves = [asyncio.gather(*(a.publish(m) for m in messages[i:i + 50])) for i in range(200, 500, 50)]
        for wave in waves:
            await wave
            await asyncio.sleep(0)
        for inbox in inboxes.values():
            for _ in range(100):
                if len(inbox) >= len(messages):
                    break
                await asyncio.sleep(0.05)
            assert inbox == messages
        publishes = 0
        while await pubsub.get_message(timeout=0.2) is not None:
            publishes += 1
        assert 0 < publishes < len(messages)
    finally:
        await pubsub.aclose()
        await client.aclose()
        await a.stop()
        await b.stop()


async def test_a_batch_is_the_header_then_the_messages(redis_url, redis_prefix):
    """The wire format the other instances read: {"t": "batch", "n": k} and k messages."""
    broker = RedisBroker.from_url(redis_url, redis_prefix)
    client, pubsub = await _raw_messages(redis_url, "{" + f"{redis_prefix}:bus" + "}")
    try:
        await asyncio.gather(*(broker.publish({"t": "emit", "n": i}) for i in range(3)))
        raw = await pubsub.get_message(timeout=5)
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(raw["data"])
        assert list(unpacker) == [{"t": "batch", "n": 3}] + [{"t": "emit", "n": i} for i in range(3)]
        # A lone message goes as it is.
        await broker.publish({"t": "emit", "n": 9})
        raw = await pubsub.get_message(timeout=5)
        assert msgpack.unpackb(raw["data"]) == {"t": "emit", "n": 9}
        assert codec.decode(msgpack.packb({"t": "batch", "n": 2}) + msgpack.packb({"a": 1})
                                   + msgpack.packb({"b": 2})) == [{"a": 1}, {"b": 2}]
    finally:
        await pubsub.aclose()
        await client.aclose()
        await broker.stop()


async def test_publishers_hear_when_redis_is_gone_and_publishing_resumes(private_redis):
    broker = RedisBroker.from_url(private_redis.url, "gone")
    received = []

    async def handler(message):
        received.append(message)
    await broker.start(handler)
    try:
        await broker.publish({"n": 1})
        private_redis.stop()
        results = await asyncio.gather(*(broker.publish({"n": i}) for i in range(2, 5)), return_exceptions=True)
        assert all(isinstance(r, BrokerUnavailable) for r in results)
        private_redis.start()
        for _ in range(150):  # the listener resubscribes with a backoff
            if broker.healthy:
                break
            await asyncio.sleep(0.1)
        await broker.publish({"n": 5})
        for _ in range(50):
            if received and received[-1] == {"n": 5}:
                break
            await asyncio.sleep(0.1)
        assert received[0] == {"n": 1} and received[-1] == {"n": 5}
    finally:
        await broker.stop()
    # Stopped: publishing is refused, not left waiting.
    try:
        await broker.publish({"n": 6})
    except BrokerUnavailable:
        pass
    else:
        raise AssertionError("a stopped broker accepted a message")


async def test_many_volatile_events_reach_a_client_of_the_other_instance_in_order(
        start_server, redis_url, redis_prefix, tmp_path, http, connect):
    """From the first instance's fan-out to a real client of the second one, for the
    JSON and the msgpack endpoints: every event, in order, batched or not."""
    one = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    two = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    api = Api(one.url, http)
    user = await api.user()
    room = f"user:{user['user']['id']}"
    json_client = await connect(two.url, "/chat", user["access_token"])
    packed = socketio.AsyncClient(reconnection=False, serializer=NotepackPacket)
    got_packed: asyncio.Queue = asyncio.Queue()
    packed.on("typing:indicator", lambda data: got_packed.put_nowait(data), namespace="/chat")
    await packed.connect(two.url, namespaces=["/chat"], auth={"token": user["access_token"]},
                         socketio_path="socket.io-msgpack", wait_timeout=5)
    try:
        def event(i):
            return Outgoing(namespace="/chat", event="typing:indicator",
                            data={"thread_id": i, "user_id": 0, "is_typing": True}, rooms=[room])

        n = 0
        # In bursts (one loop iteration each: batched) and one by one (not).
        for burst in (1, 40, 1, 1, 200, 7, 1):
            await asyncio.gather(*(one.hub.fanout.deliver([event(n + i)]) for i in range(burst)))
            n += burst
        # Several events of one delivery, too.
        await one.hub.fanout.deliver([event(n + i) for i in range(5)])
        n += 5
        got = [(await json_client.next("typing:indicator"))["thread_id"] for _ in range(n)]
        assert got == list(range(n))
        # Nothing twice: the next event either client gets is a later one.
        await one.hub.fanout.deliver([event(n)])
        await json_client.absent("typing:indicator", until="typing:indicator", where=lambda e: e["thread_id"] == n)
        got = [(await asyncio.wait_for(got_packed.get(), 5))["thread_id"] for _ in range(n + 1)]
        assert got == list(range(n + 1))
    finally:
        await bounded(packed.disconnect(), "closing the msgpack client")


async def test_durable_events_delivered_together_share_one_append(
        start_server, redis_url, redis_prefix, tmp_path, http, connect):
    """Operations that finish in one loop iteration (a group commit's) deliver
    together: their durable events go to the log in one append, in order, and every
    instance delivers each once, with its offset."""
    one = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    two = await start_server(make_settings(tmp_path, redis_url=redis_url, redis_prefix=redis_prefix))
    api = Api(one.url, http)
    user = await api.user()
    room = f"user:{user['user']['id']}"
    here, there = await connect(one.url, "/chat", user["access_token"]), await connect(two.url, "/chat",
                                                                                       user["access_token"])
    # The room's own channel: these events go to the instances with a socket there.
    client, pubsub = await _raw_messages(redis_url, "{" + f"{redis_prefix}:bus" + "}:room:/chat:" + room)
    try:
        def event(i):  # as if stored in the outbox with id 9000 + i
            return Outgoing(namespace="/chat", event="thread:updated", data={"thread_id": i, "message_count": 1},
                            rooms=[room], event_id=9000 + i)

        offsets = await asyncio.gather(*(one.hub.fanout.deliver([event(2 * i), event(2 * i + 1)])
                                         for i in range(30)))
        offsets = [o for pair in offsets for o in pair]
        assert all(offsets) and offsets == sorted(offsets, key=lambda o: tuple(map(int, o.split("-"))))
        for c in (here, there):
            assert [(await c.next("thread:updated"))["thread_id"] for _ in range(60)] == list(range(60))
            assert c.offsets["thread:updated"] == offsets
        logs = []
        while (raw := await pubsub.get_message(timeout=0.2)) is not None:
            logs += [m for m in codec.decode(raw["data"]) if m["t"] == "log"]
        assert len(logs) == 1 and len(logs[0]["e"]) == 60
    finally:
        await pubsub.aclose()
        await client.aclose()


def test_resp_parse_reads_whole_replies_and_waits_for_the_rest():
    from redis.exceptions import ResponseError

    from hub.backends.bus.resp import resp_parse

    message = b"*3\r\n$7\r\nmessage\r\n$5\r\nx:bus\r\n$4\r\n\r\n\x00\xff\r\n"
    pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
    buf = bytearray(message + pong + b":12\r\n+OK\r\n-ERR no\r\n$-1\r\n")
    value, end = resp_parse(buf, 0)
    assert value == [b"message", b"x:bus", b"\r\n\x00\xff"] and end == len(message)
    assert resp_parse(buf, end) == ([b"pong", b""], len(message) + len(pong))
    pos = len(message) + len(pong)
    assert resp_parse(buf, pos) == (12, pos + 5)
    assert resp_parse(buf, pos + 5) == (b"OK", pos + 10)
    error, after = resp_parse(buf, pos + 10)
    assert isinstance(error, ResponseError) and str(error) == "ERR no"
    assert resp_parse(buf, after) == (None, len(buf))
    # Every cut short of the end of a reply: not there yet.
    for cut in range(len(message)):
        assert resp_parse(bytearray(message[:cut]), 0) is None


async def test_redis_py_reader_fallback_delivers_in_order(redis_url, redis_prefix):
    """The reader used if redis-py's connection ever lacks the stream the lean one reads."""
    a, b = RedisBroker.from_url(redis_url, redis_prefix), RedisBroker.from_url(redis_url, redis_prefix)
    b.lean_reader = False
    got = []

    async def handler(message):
        got.append(message)
    await b.start(handler)
    try:
        messages = [{"t": "emit", "n": i} for i in range(100)]
        await asyncio.gather(*(a.publish(m) for m in messages))
        for _ in range(100):
            if len(got) >= len(messages):
                break
            await asyncio.sleep(0.05)
        assert got == messages and b.healthy
    finally:
        await a.stop()
        await b.stop()


async def test_a_frozen_redis_is_noticed_by_the_idle_ping(private_redis):
    """Redis stops answering but keeps the connection open: the bus turns unhealthy
    (/ready answers 503 from that flag), and comes back when Redis does."""
    import os
    import signal

    broker = RedisBroker.from_url(private_redis.url, "frozen")

    async def handler(message):
        pass
    await broker.start(handler)
    try:
        assert broker.healthy
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(100):
                if not broker.healthy:
                    break
                await asyncio.sleep(0.1)
            assert not broker.healthy
        finally:
            os.kill(private_redis.proc.pid, signal.SIGCONT)
        for _ in range(150):
            if broker.healthy:
                break
            await asyncio.sleep(0.1)
        assert broker.healthy
    finally:
        await broker.stop()
