"""The msgpack endpoint (`/socket.io-msgpack/`, for socket.io-msgpack-parser
clients) next to the JSON one, and issue 6 item 5: a broadcast that is binary on
the wire (any msgpack packet, or a JSON event carrying bytes) reaches every member
of a room mixing websocket and long-polling clients, on one instance and through
Redis fan-out. Runs against the hub's real configuration (hub.app.create_app), so it
guards the fast client manager too, and against python-socketio's default manager."""
from __future__ import annotations

import asyncio
import json

import pytest
import socketio
from aiohttp import web

from handlers.context import Outgoing, user_room
from engine import NotepackPacket, ProtocolServer
from tests.support.clients import Api
from tests.support.node import run_node
from tests.support.services import free_port

EXPECTED = {name: {"texts": ["one", "two", "three"], "transport": name.split("/")[1]}
            for name in ("msgpack/websocket", "msgpack/polling", "default/websocket", "default/polling")}


def check_fanout(out: str) -> None:
    result = json.loads(out)
    assert result["acks"] == [True, True, True]
    assert result["results"] == EXPECTED
    assert result["refused"]["data"]["code"] == "unauthorized"


async def test_msgpack_and_json_clients_share_rooms(server, api, node):
    a, b = await api.user(), await api.user()
    out = await run_node("parser_fanout.mjs", server.url, server.url, a["access_token"], b["access_token"],
                         str(b["user"]["id"]))
    check_fanout(out)


async def test_mixed_rooms_through_redis_fanout(spawn_hubs, pg_url, redis_url, redis_prefix, http, node):
    one, two = await spawn_hubs(2, {"HUB_DATABASE_URL": pg_url, "HUB_REDIS_URL": redis_url,
                                    "HUB_REDIS_PREFIX": redis_prefix})
    api = Api(one.url, http)
    a, b = await api.user(), await api.user()
    out = await run_node("parser_fanout.mjs", one.url, two.url, a["access_token"], b["access_token"],
                         str(b["user"]["id"]))
    check_fanout(out)


class Recorder:
    def __init__(self, parser: str):
        kw = {"serializer": NotepackPacket} if parser == "msgpack" else {}
        self.sio = socketio.AsyncClient(reconnection=False, **kw)
        self.got: asyncio.Queue = asyncio.Queue()
        self.sio.on("blob", self.got.put_nowait, namespace="/chat")


async def mixed_clients(url: str, token: str | None, parser: str = "default", path: str = "socket.io"):
    clients = []
    for transports in (["websocket"], ["polling"], ["polling", "websocket"]):
        c = Recorder(parser)
        await c.sio.connect(url, namespaces=["/chat"], transports=transports, socketio_path=path,
                            auth={"token": token} if token else None, wait_timeout=5)
        clients.append(c)
    assert sorted(c.sio.transport() for c in clients).count("polling") >= 1
    return clients


@pytest.mark.parametrize("parser, path", [("default", "socket.io"), ("msgpack", "socket.io-msgpack")])
async def test_binary_broadcast_reaches_websocket_and_polling_members(server, api, parser, path):
    """Item 5 on the hub's real servers: a JSON event with bytes, or any msgpack event."""
    b = await api.user()
    clients = await mixed_clients(server.url, b["access_token"], parser, path)
    try:
        for i in range(3):
            blob = bytes([i, 0, 255]) * 10
            await server.hub.fanout.deliver([Outgoing("/chat", "blob", {"i": i, "blob": blob},
                                                      [user_room(b["user"]["id"])])])
            for c in clients:
                got = await asyncio.wait_for(c.got.get(), 5)
                assert got == {"i": i, "blob": blob}
        assert all(c.sio.connected for c in clients)
    finally:
        for c in clients:
            await c.sio.disconnect()


async def test_binary_broadcast_with_the_default_manager():
    """Item 5 in the engine itself, with python-socketio's own client manager."""
    sio = ProtocolServer(async_mode="aiohttp")

    @sio.on("connect", namespace="/chat")
    async def connect(sid, environ, auth):
        await sio.enter_room(sid, "room", namespace="/chat")

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    clients = await mixed_clients(f"http://127.0.0.1:{port}", None)
    try:
        for i in range(3):
            await sio.emit("blob", {"i": i, "blob": b"\x00\x01" * i}, to="room", namespace="/chat")
            for c in clients:
                assert await asyncio.wait_for(c.got.get(), 5) == {"i": i, "blob": b"\x00\x01" * i}
        assert all(c.sio.connected for c in clients)
    finally:
        for c in clients:
            await c.sio.disconnect()
        await runner.cleanup()


async def test_raw_msgpack_packets_as_notepack_writes_them(settings, http):
    """The msgpack server reads notepack's `undefined` as no data, leaves absent
    fields out (a DISCONNECT has no `data`), and supports server-side acks."""
    import msgpack

    from tests.support.protocol import receive, receive_skipping_pings, start_conformance

    conf = await start_conformance(settings, parser="msgpack")
    try:
        ws = await http.ws_connect(f"{conf.ws_url}/socket.io/?EIO=4&transport=websocket")
        assert (await receive(ws)).startswith("0")
        undefined = msgpack.ExtType(0, b"\x00")  # notepack.io's encoding of `undefined`
        await ws.send_bytes(msgpack.packb({"type": 0, "nsp": "/", "data": undefined}))
        connect = msgpack.unpackb(await receive(ws))
        assert connect["type"] == 0 and connect["nsp"] == "/" and list(connect["data"]) == ["sid"]
        assert msgpack.unpackb(await receive(ws)) == {"type": 2, "nsp": "/", "data": ["auth", None]}

        await ws.send_bytes(msgpack.packb({"type": 2, "nsp": "/", "data": ["emit-with-ack", 1, b"\x01\x02"]}))
        asked = msgpack.unpackb(await receive_skipping_pings(ws))
        assert asked == {"type": 2, "nsp": "/", "id": 1, "data": ["emit-with-ack", 1, b"\x01\x02"]}
        await ws.send_bytes(msgpack.packb({"type": 3, "nsp": "/", "id": 1, "data": ["back", b"\x03"]}))
        assert msgpack.unpackb(await receive_skipping_pings(ws)) == \
            {"type": 2, "nsp": "/", "data": ["emit-with-ack", "back", b"\x03"]}

        sid = connect["data"]["sid"]
        await conf.sio.disconnect(sid, namespace="/")
        assert msgpack.unpackb(await receive_skipping_pings(ws)) == {"type": 1, "nsp": "/"}
        await ws.close()
    finally:
        await conf.runner.cleanup()
