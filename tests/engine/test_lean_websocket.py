"""The hub's lean websocket driver (engine.websocket.LeanWebSocket), its list-based send
queue and heartbeat (engine/): frames at the byte level over raw TCP, what an
idle connection holds, and that a closed one leaves nothing behind. Against
`hub conformance-server`'s app (the hub's Socket.IO server, its client manager)."""
from __future__ import annotations

import asyncio
import base64
import gc
import json
import os

import pytest

from engine.internals import missing
from engine.websocket import LeanWebSocket
from engine.queue import PacketQueue
from tests.support.protocol import open_polling, start_conformance, text

PATH = b"/socket.io/?EIO=4&transport=websocket"


@pytest.fixture
async def conf(settings):
    server = await start_conformance(settings)
    yield server
    await server.runner.cleanup()


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame (masked unless told otherwise)."""
    n = len(payload)
    head = bytes((0x80 * fin | opcode,))
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes((bit | n,))
    elif n < 65536:
        head += bytes((bit | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((bit | 127,)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWs:
    """A websocket client over a plain TCP stream: no library between the test and
    the bytes, and no task of its own."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, extra: bytes = b"", path: bytes = PATH) -> "RawWs":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n" + extra)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def text(self, message: str) -> None:
        self.send(frame(0x1, message.encode()))

    async def frame(self, timeout: float = 5) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); (None, b"") at end of stream."""
        async def read():
            try:
                b0, b1 = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                return None, b""
            assert not b1 & 0x80, "server frames are not masked"
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            return b0 & 0x0F, await self.reader.readexactly(n)
        return await asyncio.wait_for(read(), timeout)

    async def message(self, timeout: float = 5) -> str:
        """The next text message, answering pings on the way."""
        while True:
            opcode, payload = await self.frame(timeout)
            assert opcode == 0x1, (opcode, payload)
            if payload == b"2":
                self.text("3")
                continue
            return payload.decode()

    async def closed(self, timeout: float = 5) -> int | None:
        """Read to the server's close frame; its status code."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode is None:
                return None
            if opcode == 0x8:
                return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.close()


async def connected(port: int, extra: bytes = b"") -> RawWs:
    ws = await RawWs.open(port, extra)
    assert (await ws.message()).startswith("0")
    return ws


async def joined(port: int) -> RawWs:
    """Connected, and joined to the main namespace (the server greets with `auth`)."""
    ws = await connected(port)
    ws.text("40")
    assert (await ws.message()).startswith('40{"sid":')
    assert json.loads((await ws.message())[2:]) == ["auth", {}]
    return ws


async def eventually(predicate, timeout: float = 10) -> bool:
    """Wait for a state the server reaches on its own (no timing asserted)."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


# --- frames -------------------------------------------------------------------------

async def test_fragments_split_frames_and_control_frames(conf):
    ws = await connected(conf.port)
    ws.send(frame(0x1, b"4", fin=False) + frame(0x9, b"hi") + frame(0x0, b"0", fin=True))
    assert await ws.frame() == (0xA, b"hi")  # the ping is answered between the fragments
    assert (await ws.message()).startswith('40{"sid":')
    assert json.loads((await ws.message())[2:]) == ["auth", {}]
    whole = frame(0x1, b'42["message","x"]')
    ws.send(whole[:3])
    await asyncio.sleep(0.05)
    ws.send(whole[3:] + frame(0x1, b'42["message","y"]'))
    assert await ws.message() == '42["message-back","x"]'
    assert await ws.message() == '42["message-back","y"]'
    ws.close()


async def test_frames_sent_with_the_upgrade_request_are_read(conf):
    ws = await connected(conf.port, extra=frame(0x1, b"40"))
    assert (await ws.message()).startswith('40{"sid":')
    ws.close()


async def test_client_close_is_answered_and_ends_the_session(conf):
    ws = await connected(conf.port)
    assert len(conf.sio.eio.sockets) == 1
    ws.send(frame(0x8, (1000).to_bytes(2, "big")))
    assert await ws.closed() == 1000
    assert await ws.frame() == (None, b"")  # then the server ends the TCP connection
    assert await eventually(lambda: not conf.sio.eio.sockets)


async def test_a_burst_is_handled_in_order(conf):
    """More messages at once than the inbox takes before reading pauses."""
    ws = await joined(conf.port)
    ws.send(b"".join(frame(0x1, f'42["message",{i}]'.encode()) for i in range(300)))
    for i in range(300):
        assert await ws.message() == f'42["message-back",{i}]'
    ws.close()


async def test_upgrade_from_polling(conf, http):
    sid, _ = await open_polling(http, conf.url, "/socket.io/")
    ws = await RawWs.open(conf.port, path=PATH + b"&sid=" + sid.encode())
    ws.text("2probe")
    assert await ws.message() == "3probe"
    ws.text("5")
    ws.text("40")
    assert (await ws.message()).startswith('40{"sid":')
    assert isinstance(conf.sio.eio.sockets[sid].hub_ws, LeanWebSocket)
    status, _ = await text(http, "GET", f"{conf.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
    assert status == 400  # upgraded: polling is over
    ws.close()
    assert await eventually(lambda: sid not in conf.sio.eio.sockets)


@pytest.mark.parametrize("bad, code", [
    (frame(0x1, b"40", mask=False), 1002),  # a client frame must be masked
    (bytes((0xC1, 0x82)) + frame(0x1, b"40")[2:], 1002),  # reserved bit set
    (frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
    (bytes((0x82, 0xFF)) + (2_000_000).to_bytes(8, "big"), 1009),  # over maxPayload
    (frame(0x0, b"x"), 1002),  # a continuation with nothing to continue
])
async def test_protocol_errors_close_the_websocket_and_the_session(conf, bad, code):
    ws = await connected(conf.port)
    ws.send(bad)
    assert await ws.closed() == code
    assert await eventually(lambda: not conf.sio.eio.sockets)
    ws.close()


async def test_many_tiny_fragments_are_joined_and_bounded_by_max_payload(conf):
    ws = await joined(conf.port)
    body = b'42["message","' + b"y" * 3000 + b'"]'
    ws.send(frame(0x1, body[:1], fin=False) + b"".join(frame(0x0, body[i:i + 1], fin=False)
                                                       for i in range(1, len(body))) + frame(0x0, b""))
    assert await ws.message() == '42["message-back","' + "y" * 3000 + '"]'
    whole = frame(0x1, b'42["message","' + b"z" * 200_000 + b'"]')  # one frame, in many pieces
    for i in range(0, len(whole), 1000):
        ws.send(whole[i:i + 1000])
        await ws.writer.drain()
    assert await ws.message() == '42["message-back","' + "z" * 200_000 + '"]'
    ws.close()
    ws = await connected(conf.port)
    chunk = b"x" * 100_000
    ws.send(frame(0x1, b"42", fin=False) + b"".join(frame(0x0, chunk, fin=False) for _ in range(11)))
    assert await ws.closed() == 1009  # the fragments together went over maxPayload
    ws.close()


async def test_silent_client_is_closed_at_the_pong_deadline(conf):
    ws = await joined(conf.port)
    assert await ws.frame() == (0x1, b"2")  # a PING, left unanswered
    assert await ws.closed(timeout=5) == 1000
    assert await eventually(lambda: not conf.sio.eio.sockets)


# --- what a connection holds --------------------------------------------------------

def test_the_aiohttp_internals_of_the_handover_exist():
    assert missing("handover") == []


async def test_idle_connections_hold_no_task_and_leave_nothing_when_closed(conf):
    clients, tasks = [], None
    for _ in range(20):
        ws = await connected(conf.port)
        ws.text("40")
        assert (await ws.message()).startswith("40")
        clients.append(ws)
        await asyncio.sleep(0.01)
        if tasks is None:  # the server's own (Engine.IO's service task) are there now
            tasks = len(asyncio.all_tasks())
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= tasks  # no reader, writer or ping task each
    assert conf.runner.server.connections == []  # aiohttp handed them over
    for s in conf.sio.eio.sockets.values():
        assert isinstance(s.hub_ws, LeanWebSocket)
        assert "aiohttp.request" not in conf.sio.environ[s.sid]  # the parsed request is freed
    assert len(conf.sio.eio.heartbeat) <= 2 * len(clients)
    for ws in clients:
        ws.close()
    assert await eventually(lambda: not conf.sio.eio.sockets)
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, LeanWebSocket)]


# --- the send queue -----------------------------------------------------------------

async def test_packet_queue_keeps_what_engineio_uses_of_asyncio_queue():
    q = PacketQueue()
    told = []
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("a")
    q.on_put = lambda: told.append(q.qsize())
    await q.put("b")
    assert await getter == "a" and told == [2]
    joined = asyncio.ensure_future(q.join())
    await asyncio.sleep(0)
    assert not joined.done()  # "a" was got, not done; "b" waits
    q.task_done()
    assert q.take_all() == ["b"] and q.empty()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    with pytest.raises(ValueError):
        q.task_done()


async def test_with_compression_on_only_clients_offering_it_use_aiohttps_driver(settings, http):
    from dataclasses import replace

    conf = await start_conformance(replace(settings, ws_compression=True))
    try:
        drivers = {}
        for offer in (15, 0):
            async with http.ws_connect(f"{conf.ws_url}/socket.io/?EIO=4&transport=websocket", compress=offer) as ws:
                sid = json.loads((await ws.receive_str())[1:])["sid"]
                await ws.send_str("40")
                assert (await ws.receive_str()).startswith("40")
                drivers[offer] = (ws.compress, type(conf.sio.eio.sockets[sid].hub_ws))
        assert drivers[15][0] and not issubclass(drivers[15][1], LeanWebSocket)
        assert drivers[0] == (0, drivers[0][1]) and issubclass(drivers[0][1], LeanWebSocket)
    finally:
        await conf.runner.cleanup()
