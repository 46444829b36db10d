"""engine/manager.py: the broadcast path under python-socketio (fast websocket writes,
queued fallback, per-wire-format encoding, per-connection order, compression setting).

Real servers on loopback and real python-socketio clients; no timing assertions."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp

from engine import HubManager, ws_frame
from engine.internals import missing
from tests.support.clients import Api
from tests.support.servers import make_settings

CHAT = "/chat"


async def _user_sockets(server, api, connect, transports_list):
    login = await api.user()
    clients = [await connect(server.url, CHAT, login["access_token"], transports=t) for t in transports_list]
    return login["user"]["id"], clients


def _manager(server) -> HubManager:
    manager = server.hub.sio.manager
    assert isinstance(manager, HubManager)
    return manager


async def test_internals_of_the_pinned_versions_are_there():
    assert missing("broadcast") == []


def test_ws_frame_lengths():
    assert ws_frame("42") == b"\x81\x0242"
    assert ws_frame(b"\x00" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert ws_frame(b"\x01" * 70000)[:10] == b"\x82\x7f" + (70000).to_bytes(8, "big")


async def test_text_broadcast_reaches_websocket_and_polling_clients(server, api, connect):
    manager = _manager(server)
    uid, clients = await _user_sockets(server, api, connect,
                                       [["websocket"], ["websocket"], ["polling"], ["polling"], None])
    direct, queued = manager.direct_writes, manager.queued_writes
    await server.hub.sio.emit("probe", {"text": "héllo ✓", "n": 1}, to=f"user:{uid}", namespace=CHAT)
    for c in clients:
        assert await c.next("probe") == {"text": "héllo ✓", "n": 1}
    # Two websocket-only clients went straight to the wire; the polling ones were queued.
    assert manager.direct_writes - direct >= 2
    assert manager.queued_writes - queued >= 2


async def test_binary_broadcast_to_a_room_mixing_websocket_and_polling(server, api, connect):
    """Encoded once per wire format: raw frames for websocket, base64 for polling."""
    uid, clients = await _user_sockets(server, api, connect,
                                       [["websocket"], ["polling"], ["websocket"], ["polling"]])
    blob = bytes(range(256)) * 4
    for i in range(3):
        await server.hub.sio.emit("blob", {"i": i, "data": blob, "more": [b"\x00\xff", "x"]},
                                  to=f"user:{uid}", namespace=CHAT)
    for c in clients:
        for i in range(3):
            got = await c.next("blob")
            assert got == {"i": i, "data": blob, "more": [b"\x00\xff", "x"]}, c.sio.transport()


async def test_skip_sid_and_several_rooms(server, api, connect):
    uid, (a, b) = await _user_sockets(server, api, connect, [["websocket"], ["polling"]])
    uid2, (c,) = await _user_sockets(server, api, connect, [["websocket"]])
    skip = a.sio.get_sid(CHAT)
    await server.hub.sio.emit("hello", {"x": 1}, to=[f"user:{uid}", f"user:{uid2}"], namespace=CHAT,
                              skip_sid=skip)
    assert await b.next("hello") == {"x": 1}
    assert await c.next("hello") == {"x": 1}
    # The skipped socket's next event is a later emit to the same rooms: no "hello" before it.
    await server.hub.sio.emit("later", {"x": 2}, to=[f"user:{uid}", f"user:{uid2}"], namespace=CHAT)
    await a.absent("hello", until="later")


class RawSocket:
    """A bare Engine.IO/Socket.IO websocket client on /chat, reading only when asked,
    so the server's writes to it back up (its transport pauses)."""

    def __init__(self, ws, eio_sid: str):
        self.ws, self.eio_sid = ws, eio_sid

    @classmethod
    async def open(cls, http, url: str, token: str) -> "RawSocket":
        ws = await http.ws_connect(url + "/socket.io/?EIO=4&transport=websocket", compress=0)
        opened = await ws.receive_str()
        assert opened.startswith("0")
        await ws.send_str("40/chat," + json.dumps({"token": token}))
        assert (await ws.receive_str()).startswith("40/chat,")
        return cls(ws, json.loads(opened[1:])["sid"])

    async def frame(self):
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 20)
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "2":
                await self.ws.send_str("3")
                continue
            return msg.data

    async def event(self):
        """The next Socket.IO event as (name, data, [binary attachments])."""
        text = await self.frame()
        assert isinstance(text, str), text
        head, _, body = text.partition(",")
        attachments = []
        if head.startswith("45"):
            for _ in range(int(head[2:head.index("-")])):
                blob = await self.frame()
                assert isinstance(blob, bytes), blob  # a binary frame, never base64 text
                attachments.append(blob)
        else:
            assert head == "42/chat", text
        name, data = json.loads(body)
        return name, data, attachments


async def test_order_per_connection_under_load(server, api, connect, http):
    """Bursts larger than the socket buffers of clients that do not read meanwhile:
    frames go straight to the wire until a transport pauses, then through the queue;
    every client still gets every event once, in order, with its binary part in the
    encoding of its own transport, interleaved with acks of its own requests."""
    manager = _manager(server)
    login = await api.user()
    uid, token = login["user"]["id"], login["access_token"]
    raw = [await RawSocket.open(http, server.url, token) for _ in range(2)]
    clients = [await connect(server.url, CHAT, token, transports=t) for t in (["websocket"], ["polling"], None)]
    direct, queued = manager.direct_writes, manager.queued_writes
    pad = "p" * 30_000
    total = 300

    async def burst():
        for n in range(total):
            await server.hub.sio.emit("seq", {"n": n, "pad": pad, "bin": bytes([n % 256]) * 3},
                                      to=f"user:{uid}", namespace=CHAT)
            if n % 5 == 0:
                # python-engineio's client refuses a long-poll payload of more than
                # 16 packets; pace the burst for the polling client's sake.
                await asyncio.sleep(0.02)

    async def requests(client):
        # Acks are sent through the queue; they must not reorder the broadcasts.
        for _ in range(5):
            try:
                assert (await client.ok("unread:count"))["unread_count"] == 0
            except Exception as exc:
                raise AssertionError(f"{client.sio.transport()} {exc!r}")

    await asyncio.gather(burst(), *(requests(c) for c in clients))
    assert manager.queued_writes - queued > 0
    assert manager.direct_writes - direct > 0
    for i, c in enumerate(clients):
        for n in range(total):
            try:
                got = await c.next("seq", timeout=20)
            except asyncio.TimeoutError:
                raise AssertionError(f"client {i} ({c.sio.transport()}) stopped at {n}")
            assert got["n"] == n
            assert got["bin"] == bytes([n % 256]) * 3
    for r in raw:
        for n in range(total):
            name, data, blobs = await r.event()
            assert (name, data["n"], blobs) == ("seq", n, [bytes([n % 256]) * 3])
        await r.ws.close()


async def test_compression_is_off_by_default_and_available_as_a_setting(start_server, tmp_path, http):
    plain = await start_server(make_settings(tmp_path / "a"))
    deflate = await start_server(replace(make_settings(tmp_path / "b"), ws_compression=True))

    async def negotiated(srv) -> int:
        async with http.ws_connect(srv.url + "/socket.io/?EIO=4&transport=websocket", compress=15) as ws:
            assert (await ws.receive_str()).startswith("0")  # Engine.IO OPEN
            return ws.compress

    assert await negotiated(plain) == 0
    assert await negotiated(deflate) != 0

    # A connection that negotiated compression takes the queued path (aiohttp compresses
    # each frame) and still receives every broadcast, in order.
    login = await Api(deflate.url, http).user()
    manager = _manager(deflate)
    async with http.ws_connect(deflate.url + "/socket.io/?EIO=4&transport=websocket", compress=15) as ws:
        assert ws.compress
        assert (await ws.receive_str()).startswith("0")
        await ws.send_str('40/chat,' + json.dumps({"token": login["access_token"]}))
        assert (await ws.receive_str()).startswith("40/chat,")
        direct = manager.direct_writes
        for n in range(20):
            await deflate.hub.sio.emit("seq", {"n": n}, to=f"user:{login['user']['id']}", namespace=CHAT)
        for n in range(20):
            frame = await asyncio.wait_for(ws.receive_str(), 5)
            while frame == "2":  # an Engine.IO ping
                await ws.send_str("3")
                frame = await asyncio.wait_for(ws.receive_str(), 5)
            assert frame == "42/chat," + json.dumps(["seq", {"n": n}], separators=(",", ":"))
        assert manager.direct_writes == direct


async def test_callbacks_use_the_normal_path(server, api, connect):
    uid, (c,) = await _user_sockets(server, api, connect, [["websocket"]])
    got = asyncio.get_running_loop().create_future()

    async def answer(*args):
        return "pong"

    c.sio.on("ask", answer, namespace=CHAT)
    await server.hub.sio.emit("ask", {"q": 1}, to=c.sio.get_sid(CHAT), namespace=CHAT,
                              callback=lambda *a: got.set_result(a))
    assert await asyncio.wait_for(got, 5) == ("pong",)


async def test_disconnected_sockets_are_skipped(server, api, connect):
    uid, (a, b) = await _user_sockets(server, api, connect, [["websocket"], ["websocket"]])
    await a.close()
    await asyncio.sleep(0.2)
    await server.hub.sio.emit("after", {"x": 1}, to=f"user:{uid}", namespace=CHAT)
    assert await b.next("after") == {"x": 1}
    async with aiohttp.ClientSession() as s:
        async with s.get(server.url + "/health") as resp:
            assert resp.status == 200


async def test_broadcasts_of_one_loop_iteration_share_one_write(server, api, connect, http):
    """Frames for the same socket within one loop iteration go out in one write,
    in order, and before anything queued for that socket afterwards."""
    manager = _manager(server)
    login = await api.user()
    uid, token = login["user"]["id"], login["access_token"]
    raw = await RawSocket.open(http, server.url, token)
    py = await connect(server.url, CHAT, token, transports=["websocket"])
    sio = server.hub.sio
    flushes = manager.flushes
    # No await point between these emits suspends: one iteration.
    for n in range(5):
        await sio.emit("seq", {"n": n}, to=f"user:{uid}", namespace=CHAT)
    assert manager.flushes == flushes  # not written yet
    # A packet queued for the same socket after them (the normal path) comes after.
    await sio.eio.send(raw.eio_sid, '2/chat,["after",{"x":1}]')
    for n in range(5):
        assert await raw.event() == ("seq", {"n": n}, [])
        assert (await py.next("seq"))["n"] == n
    assert await raw.event() == ("after", {"x": 1}, [])
    assert manager.flushes > flushes
    await raw.ws.close()


async def test_the_writer_task_writes_gathered_frames_before_what_was_queued_after(server, api, http):
    """With a flush_window, frames wait for the next flush; a packet queued
    meanwhile (an ack, a ping) must not overtake them."""
    manager = _manager(server)
    login = await api.user()
    raw = await RawSocket.open(http, server.url, login["access_token"])
    room = f"user:{login['user']['id']}"
    loop = asyncio.get_running_loop()
    manager.flush_window = 30.0
    manager._last_flush = loop.time()  # the next flush is due in 30 s
    try:
        for n in range(3):
            await server.hub.sio.emit("seq", {"n": n}, to=room, namespace=CHAT)
        await asyncio.sleep(0.2)
        assert manager._pending  # still gathered
        await server.hub.sio.eio.send(raw.eio_sid, '2/chat,["after",{"x":1}]')
        for n in range(3):
            assert await raw.event() == ("seq", {"n": n}, [])
        assert await raw.event() == ("after", {"x": 1}, [])
    finally:
        manager.flush_window = 0.0
        manager._flush()
        await raw.ws.close()


async def test_a_sockets_rooms_come_from_an_index_and_a_disconnect_leaves_them_all(server, api, connect):
    """python-socketio finds a socket's rooms by walking every room of the namespace
    (on each disconnect and `rooms(sid)`); the manager keeps an index instead. It
    answers what the walk would, and a disconnect leaves nothing behind."""
    uid, (a, b) = await _user_sockets(server, api, connect, [["websocket"], ["polling"]])
    manager = _manager(server)
    sid, other = a.sio.get_sid(CHAT), b.sio.get_sid(CHAT)

    def walk(s: str) -> list[str]:
        return sorted(r for r, members in manager.rooms[CHAT].items() if r is not None and s in members)

    assert sorted(server.hub.sio.rooms(sid, namespace=CHAT)) == walk(sid) == sorted([sid, f"user:{uid}", "everyone"])
    await manager.enter_room(sid, CHAT, "extra")
    await manager.enter_room(other, CHAT, "shared")
    await manager.enter_room(sid, CHAT, "shared")
    await manager.leave_room(sid, CHAT, "shared")
    assert sorted(manager.get_rooms(sid, CHAT)) == walk(sid) and "shared" not in walk(sid)
    await a.close()
    for _ in range(100):  # until the server has handled the disconnect
        if sid not in manager.rooms[CHAT][None]:
            break
        await asyncio.sleep(0.05)
    assert "extra" not in manager.rooms[CHAT]  # emptied with its last member
    assert all(sid not in members for members in manager.rooms[CHAT].values())
    assert manager.get_rooms(sid, CHAT) == []
    assert sorted(manager.get_rooms(other, CHAT)) == walk(other) == sorted([other, f"user:{uid}", "everyone", "shared"])
