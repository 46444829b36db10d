"""Raw Engine.IO / Socket.IO helpers for the protocol tests (issue 6): plain HTTP
requests and websockets (aiohttp's client), no Socket.IO library in between."""
from __future__ import annotations

import asyncio
import json

import aiohttp
from aiohttp import web

from hub.adapters.conformance import EIO, SIO, create_conformance_app
from tests.support.services import free_port


class Conformance:
    """`hub conformance-server`'s app, served in-process on a free loopback port."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int):
        self.app, self.runner, self.port = app, runner, port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.sio, self.eio = app[SIO], app[EIO]


async def start_conformance(settings, parser: str = "default") -> Conformance:
    app = create_conformance_app(settings, parser=parser)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return Conformance(app, runner, port)


async def text(session: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, str]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.text()


async def open_polling(session, base: str, path: str = "/engine.io/") -> tuple[str, dict]:
    status, body = await text(session, "GET", f"{base}{path}?EIO=4&transport=polling")
    assert status == 200, body
    assert body.startswith("0"), body
    handshake = json.loads(body[1:])
    return handshake["sid"], handshake


async def receive(ws, timeout: float = 5):
    """The next message's data (str or bytes), or None once the websocket is closed."""
    msg = await asyncio.wait_for(ws.receive(), timeout)
    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
        return msg.data
    return None


async def closed(ws, timeout: float = 5) -> list:
    """Read until the server closes the websocket; returns what arrived before."""
    seen = []
    while True:
        data = await receive(ws, timeout)
        if data is None:
            return seen
        seen.append(data)


async def receive_skipping_pings(ws, timeout: float = 5):
    while True:
        data = await receive(ws, timeout)
        if data != "2":
            return data
        await ws.send_str("3")
