"""What nobody anonymous may do to the transport (issue 18, items 1 and 6): raw
Engine.IO / Socket.IO frames over aiohttp websockets and raw TCP against the hub's
real app or a `hub serve` process, and the official JavaScript client over
long-polling through a slow link."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import aiohttp

from tests.support.clients import Api
from tests.support.dialogs import ORIGIN
from tests.support.node import run_node
from tests.support.protocol import closed, open_polling, receive, text
from tests.support.services import free_port

FRAME = 900_000  # one websocket frame: under the transport's packet limit (1,000,000 bytes)


async def eio_ws(http, url: str):
    ws = await http.ws_connect(url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                               max_msg_size=0)
    assert (await receive(ws)).startswith("0")
    return ws


async def joined(http, url: str, namespace: str, token: str):
    ws = await eio_ws(http, url)
    await ws.send_str(f"40{namespace}," + json.dumps({"token": token}))
    reply = await receive(ws)
    assert reply.startswith(f"40{namespace},{{"), reply
    return ws


def rss(pid: int, field: str) -> int:
    """A memory figure of a process from /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


async def test_main_namespace_is_not_served(server, http):
    ws = await eio_ws(http, server.url)
    await ws.send_str("40")
    assert await receive(ws) == '44{"message":"Invalid namespace"}'
    await ws.send_str('40{"token":"whatever"}')
    assert await receive(ws) == '44{"message":"Invalid namespace"}'
    await ws.close()


async def test_binary_flood_closes_the_connection_and_memory_stays_bounded(spawn_hubs, http):
    """Three connections announce binary attachments and then send ~1 MB frames, as
    the audit did (273 MiB in 2.4 s): an anonymous one on `/`, a user on /chat
    (few attachments, too many bytes) and a widget visitor on /dialogs (a huge
    count). Each is closed after at most a couple of frames, and the server's
    peak memory grows by far less than what was sent."""
    (hub,) = await spawn_hubs(1, {"HUB_WIDGET_SESSIONS_PER_MINUTE": "100"})
    api = Api(hub.url, http)
    user = await api.user()
    status, assistant = await api.request("POST", "/api/assistants", token=user["access_token"],
                                          json={"name": "Helper", "allowed_origins": [ORIGIN]})
    assert status == 201, assistant
    status, visitor = await api.request("POST", "/api/widget/sessions", json={"assistant_id": assistant["id"]},
                                        headers={"Origin": ORIGIN})
    assert status == 201, visitor

    anonymous = await eio_ws(http, hub.url)
    await anonymous.send_str("40")
    assert (await receive(anonymous)).startswith("44")  # refused; the header below is then a stray packet
    chat = await joined(http, hub.url, "/chat", user["access_token"])
    dialogs = await joined(http, hub.url, "/dialogs", visitor["visitor_token"])
    floods = [
        (anonymous, '4512345-["message:send",{"_placeholder":true,"num":0}]'),
        (chat, '4510-/chat,["message:send",{"_placeholder":true,"num":0}]'),
        (dialogs, '459999999-/dialogs,["message:send",{"_placeholder":true,"num":0}]'),
    ]
    # The peak so far (a password hash takes 64 MiB for a moment) is forgotten:
    # writing 5 to clear_refs resets VmHWM to the current resident size.
    Path(f"/proc/{hub.proc.pid}/clear_refs").write_text("5")
    before = rss(hub.proc.pid, "VmRSS")
    chunk = b"\x00" * FRAME
    frames_each = 100  # 270 MB in all, if nothing stopped them

    async def flood(ws, header: str) -> int:
        ended = asyncio.ensure_future(closed(ws, timeout=30))
        sent = 0
        try:
            await ws.send_str(header)
            while sent < frames_each and not ended.done():
                await ws.send_bytes(chunk)
                sent += 1
        except (ConnectionError, aiohttp.ClientError):
            pass
        return sent, ended

    results = await asyncio.gather(*(flood(ws, header) for ws, header in floods))
    sent = [n for n, _ in results]
    growth = rss(hub.proc.pid, "VmHWM") - before
    assert growth < 50 * 2**20, f"peak memory grew {growth / 2**20:.0f} MiB; frames sent {sent}"
    for _, ended in results:
        await asyncio.wait_for(ended, 30)  # the server closed each one
    assert all(n < frames_each for n in sent), sent
    # Each close is logged by the server as it happens; the file may trail the close a little.
    for reason in ("binary attachments over 1000000 bytes, closing the connection",
                   "9999999 binary attachments announced, over 16, closing the connection"):
        for _ in range(100):
            if reason in hub.log.read_text():
                break
            await asyncio.sleep(0.1)
        assert reason in hub.log.read_text(), hub.log.read_text()[-3000:]
    log = hub.log.read_text()
    assert "Traceback" not in log
    # The hub is fine afterwards.
    assert (await api.request("GET", "/health"))[0] == 200


async def test_session_without_a_namespace_is_closed_at_the_connect_timeout(start_server, settings, http):
    server = await start_server(replace(settings, connect_timeout=0.5))
    api = Api(server.url, http)
    never = await eio_ws(http, server.url)  # joins nothing
    assert await closed(never, timeout=10) in ([], ["1"])
    # A session that leaves its last namespace gets the same timeout again.
    user = await api.user()
    left = await joined(http, server.url, "/chat", user["access_token"])
    await left.send_str("41/chat,")
    assert await closed(left, timeout=10) in ([], ["1"])
    # One still in a namespace stays: it answers a request after both closed.
    stays = await joined(http, server.url, "/chat", user["access_token"])
    await stays.send_str('42/chat,1["unread:count",{}]')
    assert await receive(stays) == '43/chat,1[{"ok":true,"data":{"unread_count":0}}]'

    await stays.close()


# --- item 6: long-polling on real networks ---------------------------------------------

class SlowLink:
    """A loopback TCP proxy that forwards what the client sends in `piece`-byte
    pieces, each its own TCP segment, with a pause between them (a slow network)."""

    def __init__(self, upstream_port: int, piece: int = 200, pause: float = 0.002):
        self.upstream_port, self.piece, self.pause = upstream_port, piece, pause
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    async def start(self) -> "SlowLink":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, client_r, client_w):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_w.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY: one segment per piece

        async def slowly(reader, writer):
            try:
                while data := await reader.read(65536):
                    for i in range(0, len(data), self.piece):
                        writer.write(data[i:i + self.piece])
                        await writer.drain()
                        await asyncio.sleep(self.pause)
            except ConnectionError:
                pass
            finally:
                writer.close()

        async def plainly(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(slowly(client_r, up_w), plainly(up_r, client_w))

    async def stop(self):
        self.server.close()


async def dribble(port: int, head: bytes, body: bytes, piece: int = 7, pause: float = 0.01) -> bytes:
    """A raw HTTP request whose body comes in `piece`-byte writes with pauses; the
    whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(6, 1, 1)
    writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    for i in range(0, len(body), piece):
        await asyncio.sleep(pause)
        writer.write(body[i:i + piece])
        await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return response


async def test_polling_post_in_many_tcp_segments_is_read_whole(server, api, http):
    user = await api.user()
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    body = ("40/chat," + json.dumps({"token": user["access_token"]})).encode()
    head = f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n" \
           f"Content-Type: text/plain;charset=UTF-8\r\n".encode()
    response = await dribble(server.port, head, body)
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"ok"), response
    status, packets = await text(http, "GET", f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}")
    assert status == 200 and packets.startswith("40/chat,{"), packets


async def test_oversized_polling_post_is_payload_too_large_and_the_session_stays(server, api, http):
    user = await api.user()
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    base = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    async with http.post(base, data=b"4" + b"x" * 1_000_000) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert await text(http, "POST", base, data="40/chat," + json.dumps({"token": user["access_token"]})) \
        == (200, "ok")
    status, packets = await text(http, "GET", base)
    assert status == 200 and packets.startswith("40/chat,{"), packets


async def test_official_client_over_polling_through_a_slow_link(server, api, node):
    a, b = await api.user(), await api.user()
    link = await SlowLink(server.port, piece=200).start()
    try:
        limit = server.hub.settings.max_payload_bytes
        out = await run_node("slow_polling.mjs", link.url, a["access_token"], str(b["user"]["id"]),
                             str(limit + 1000), timeout=120)
    finally:
        await link.stop()
    assert json.loads(out) == {"normal": "ok", "big": "payload_too_large", "after": "ok",
                               "connected": True, "disconnects": []}


async def test_overlapping_polling_posts_close_the_session(server, http):
    """A session reads one POST body at a time, like Node ("data request overlap")."""
    sid, _ = await open_polling(http, server.url, "/socket.io/")
    base = f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n4".encode())  # 99 bytes to come
    await writer.drain()
    for _ in range(100):  # the second POST, once the first one's body is being read
        status, _ = await text(http, "POST", base, data="3")  # a PONG: harmless on its own
        if status != 200:
            break
        await asyncio.sleep(0.05)
    assert status == 400
    assert (await text(http, "GET", base))[0] == 400  # the session is gone
    writer.close()
