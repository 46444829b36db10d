"""Socket.IO v5 as Node's reference server keeps it (issue 6, items 6 and 7, and
malformed packets), checked with raw websockets / polling and with the official
JavaScript client, against `hub conformance-server`'s app and the hub's real app."""
from __future__ import annotations

import asyncio
import json

import pytest

from handlers.context import Outgoing
from engine import ws_frame
from tests.support.node import run_node
from tests.support.protocol import closed, open_polling, receive, receive_skipping_pings, start_conformance, text


@pytest.fixture
async def conf(settings):
    server = await start_conformance(settings)
    yield server
    await server.runner.cleanup()


async def sio_ws(http, base_ws: str, path: str = "/socket.io/"):
    ws = await http.ws_connect(f"{base_ws}{path}?EIO=4&transport=websocket")
    assert (await receive(ws)).startswith("0")
    return ws


# --- item 6: the CONNECT comes first --------------------------------------------------

@pytest.mark.parametrize("connect, prefix, auth", [
    ("40", "40", {}),
    ('40{"token":"123"}', "40", {"token": "123"}),
    ("40/custom,", "40/custom,", {}),
    ('40/custom,{"token":"abc"}', "40/custom,", {"token": "abc"}),
])
async def test_connect_packet_precedes_connect_handler_events(conf, http, connect, prefix, auth):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str(connect)
    first = await receive(ws)
    assert first.startswith(prefix), first
    assert list(json.loads(first[len(prefix):])) == ["sid"]
    nsp = prefix[2:]
    assert await receive(ws) == f"42{nsp}" + json.dumps(["auth", auth], separators=(",", ":"))
    await ws.close()


class OneFramePerRead:
    """A websocket client over plain TCP that, like the official suites' reader (ws 8.5
    with one-shot `message` listeners), takes one frame from each socket read: `read`
    returns the frames of one read, so a test can say that a frame came alone."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str = "/socket.io/?EIO=4&transport=websocket"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send_text(self, message: str) -> None:
        payload = message.encode()
        assert len(payload) < 126
        key = b"\x01\x02\x03\x04"
        self.writer.write(bytes((0x81, 0x80 | len(payload))) + key
                          + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    async def read(self) -> list[str]:
        """The text frames of the next read of the socket."""
        data = await asyncio.wait_for(self.reader.read(65536), 5)
        assert data, "connection closed"
        while True:  # a frame cut by the read: the rest is read too (it came with it)
            frames, pos = [], 0
            while pos < len(data):
                n, pos = data[pos + 1] & 0x7F, pos + 2
                assert data[pos - 2] == 0x81 and n < 126, data  # short text frames only
                frames.append(data[pos:pos + n].decode())
                pos += n
            if pos == len(data):
                return frames
            data += await asyncio.wait_for(self.reader.read(65536), 5)

    def close(self) -> None:
        self.writer.close()


@pytest.mark.parametrize("connect, prefix", [("40", "40"), ("40/custom,", "40/custom,")])
async def test_connect_reply_and_handler_events_arrive_in_separate_reads(conf, connect, prefix):
    """The official Socket.IO suite reads one frame per socket read: a CONNECT reply
    written together with the connect handler's `auth` event cost it the event
    (6 of its 32 tests failed). The reply is written alone, the events after it."""
    ws = await OneFramePerRead.open(conf.port)
    opened = await ws.read()
    assert len(opened) == 1 and opened[0].startswith("0{"), opened
    ws.send_text(connect)
    first = await ws.read()
    assert len(first) == 1 and first[0].startswith(prefix + "{"), first  # the reply, alone
    assert await ws.read() == [f'42{prefix[2:]}["auth",{{}}]']
    ws.close()


async def test_hub_writes_the_connect_reply_alone_then_the_handler_events(probe_namespace, http):
    """With `hub serve`'s settings (no pause), the CONNECT reply still leaves in a
    transport write of its own; the connect handler's events follow, in order. The
    server's writes are recorded on its transport (and still made)."""
    sio = probe_namespace.hub.sio
    ws = await http.ws_connect(probe_namespace.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket")
    opened = await receive(ws)
    assert opened.startswith("0{"), opened
    transport = sio.eio.sockets[json.loads(opened[1:])["sid"]].hub_ws.raw
    writes: list[bytes] = []
    write = transport.write

    def recording(data):
        writes.append(bytes(data))
        write(data)

    transport.write = recording
    await ws.send_str("40/probe,")
    packets = [await receive_skipping_pings(ws) for _ in range(4)]
    assert packets[0].startswith("40/probe,{"), packets
    written = [w for w in writes if w != ws_frame("2")]  # pings, if any
    assert written[0] == ws_frame(packets[0])  # alone
    assert b"".join(written[1:]) == b"".join(ws_frame(p) for p in packets[1:])
    await ws.close()


@pytest.fixture
async def probe_namespace(server):
    """A namespace on the hub's real servers (both parsers) whose connect handler
    emits to the new socket directly and through the hub's fan-out (a room it is in)."""
    hub = server.hub

    for sio in hub.fanout.servers:
        async def connect(sid, environ, auth, sio=sio):
            await sio.enter_room(sid, "probe-room", namespace="/probe")
            await sio.emit("direct", {"n": 1}, to=sid, namespace="/probe")
            await hub.fanout.deliver([Outgoing("/probe", "fanned", {"n": 2}, ["probe-room"])])
            await sio.emit("direct", {"n": 3}, to=sid, namespace="/probe")

        sio.on("connect", connect, namespace="/probe")
    return server


async def test_hub_sends_connect_before_handler_events_over_websocket(probe_namespace, http):
    server = probe_namespace
    ws = await sio_ws(http, server.url.replace("http", "ws"))
    await ws.send_str("40/probe,")
    packets = [await receive_skipping_pings(ws) for _ in range(4)]
    assert packets[0].startswith("40/probe,{"), packets
    assert packets[1:] == ['42/probe,["direct",{"n":1}]', '42/probe,["fanned",{"n":2}]',
                           '42/probe,["direct",{"n":3}]']
    await ws.close()


async def test_hub_sends_connect_before_handler_events_over_polling(probe_namespace, http):
    server = probe_namespace
    base = f"{server.url}/socket.io/?EIO=4&transport=polling"
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    assert await text(http, "POST", f"{base}&sid={sid}", data="40/probe,") == (200, "ok")
    packets: list[str] = []
    while len(packets) < 4:
        status, body = await text(http, "GET", f"{base}&sid={sid}")
        assert status == 200, body
        packets += [p for p in body.split("\x1e") if p != "2"]
    assert packets[0].startswith("40/probe,{"), packets
    assert [p.split(",", 1)[1] for p in packets[1:]] == [
        '["direct",{"n":1}]', '["fanned",{"n":2}]', '["direct",{"n":3}]']


async def test_refused_connect_sends_no_handler_events(server, http):
    """Events emitted before a refusal are dropped with it, not sent."""
    sio = server.hub.sio

    async def connect(sid, environ, auth):
        await sio.emit("leak", {"secret": True}, to=sid, namespace="/refuse")
        raise ConnectionRefusedError("no")

    sio.on("connect", connect, namespace="/refuse")
    ws = await sio_ws(http, server.url.replace("http", "ws"))
    await ws.send_str("40/refuse,")
    assert await receive(ws) == '44/refuse,{"message":"Connection refused by server"}'
    await ws.send_str("40/nope,")
    assert (await receive(ws)).startswith("44/nope,")  # nothing from /refuse in between
    await ws.close()


def test_connect_reply_is_overridable(conf):
    from hub.adapters.socketio_server import HubServer

    assert HubServer.connect_reply(conf.sio, "abc", "/") == {"sid": "abc"}


# --- item 7: unknown namespace ------------------------------------------------------

async def test_unknown_namespace_is_invalid_namespace(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40/random")
    assert await receive(ws) == '44/random,{"message":"Invalid namespace"}'
    await ws.close()


async def test_hub_unknown_namespace_reaches_the_js_client_as_a_message(server, node):
    out = await run_node("connect_error.mjs", server.url + "/no-such-namespace")
    assert json.loads(out) == {"message": "Invalid namespace"}


# --- the reference behaviour through the official client ----------------------------

@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_official_client_against_reference_server(conf, node, transport):
    result = json.loads(await run_node("protocol_reference.mjs", conf.url, transport, "default"))
    assert result["transport"] == transport
    assert result["main"] == {"auth": {"token": "123"}, "order": ["connect", "auth"], "idAtAuth": True}
    assert result["custom"] == {"auth": {}, "order": ["connect", "auth"]}
    assert result["echoed"] == [1, "2", {"3": [True]}, {"bytes": [1, 2, 3]}]
    assert result["acked"] == ["x", {"y": [1, 2]}, {"bytes": [4, 5]}]
    assert result["refused"] == {"message": "Invalid namespace", "data": None}


# --- messages, malformed packets, disconnect, connect timeout --------------------------

async def test_raw_messages_binary_and_acks(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)  # CONNECT, auth
    await ws.send_str('42["message",1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '42["message-back",1,"2",{"3":[true]}]'
    await ws.send_str('42456["message-with-ack",1,"2",{"3":[false]}]')
    assert await receive_skipping_pings(ws) == '43456[1,"2",{"3":[false]}]'
    await ws.send_str('452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
    await ws.send_bytes(bytes([1, 2, 3]))
    await ws.send_bytes(bytes([4, 5, 6]))
    assert await receive_skipping_pings(ws) == \
        '462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert await receive_skipping_pings(ws) == bytes([1, 2, 3])
    assert await receive_skipping_pings(ws) == bytes([4, 5, 6])
    await ws.close()


@pytest.mark.parametrize("bad", ["4abc", "42{}", '42abc["message-with-ack",1]', "42[]", "43[1]", "44{}"])
async def test_malformed_packet_closes_the_connection(conf, http, bad):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str(bad)
    await closed(ws, timeout=2)


async def test_disconnect_from_namespace(conf, http):
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str("40/custom,")
    assert (await receive_skipping_pings(ws)).startswith("40/custom,")
    await receive_skipping_pings(ws)  # auth
    await ws.send_str("41/custom,")
    await ws.send_str('42["message","to main"]')
    assert await receive_skipping_pings(ws) == '42["message-back","to main"]'
    await ws.close()


async def test_session_without_namespace_is_closed_after_connect_timeout(conf, http):
    ws = await sio_ws(http, conf.ws_url)  # connect_timeout is 1 s here, pingInterval 0.3 s
    pings = 0
    while (data := await receive(ws, timeout=5)) == "2":
        pings += 1
        await ws.send_str("3")  # alive: only the connect timeout may close it
    assert data in ("1", None)  # a CLOSE packet, or the websocket closed
    assert pings >= 2  # it lived through pings: not closed by a ping timeout
    assert await closed(ws) == []


async def test_server_side_ack_round_trip(conf, http):
    """The reference `emit-with-ack`: the server asks for an ack (id 1) and emits its arguments."""
    ws = await sio_ws(http, conf.ws_url)
    await ws.send_str("40")
    await receive(ws), await receive(ws)
    await ws.send_str('42["emit-with-ack",1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '421["emit-with-ack",1,"2",{"3":[true]}]'
    await ws.send_str('431[1,"2",{"3":[true]}]')
    assert await receive_skipping_pings(ws) == '42["emit-with-ack",1,"2",{"3":[true]}]'
    await ws.close()
