"""A plain-WebSocket client for the gateway tests (aiohttp's), reading JSON frames."""
from __future__ import annotations

import asyncio
import json

import aiohttp


class Plain:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self._ids = 0
        self.kept: list[dict] = []  # frames read past by `next`

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, first: dict | None = None) -> "Plain":
        ws = await http.ws_connect(url.replace("http://", "ws://"), autoping=True)
        if first is not None:
            await ws.send_str(json.dumps(first))
        return cls(ws)

    async def _read(self, timeout: float) -> dict:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, (msg.type, msg.data, msg.extra)
        return json.loads(msg.data)

    async def frame(self, timeout: float = 10) -> dict:
        """The next frame not yet taken."""
        return self.kept.pop(0) if self.kept else await self._read(timeout)

    async def next(self, pred, timeout: float = 10) -> dict:
        """The first frame matching `pred`; the others stay for later reads."""
        for i, frame in enumerate(self.kept):
            if pred(frame):
                return self.kept.pop(i)
        while True:
            frame = await self._read(timeout)
            if pred(frame):
                return frame
            self.kept.append(frame)

    async def call(self, event: str, data=None, ns: str | None = None) -> dict:
        """A request frame; returns its reply (server events before it stay in `kept`)."""
        self._ids += 1
        rid = self._ids
        await self.ws.send_str(json.dumps({"id": rid, "event": event, "data": data or {},
                                           **({"ns": ns} if ns else {})}))
        return await self.next(lambda f: f.get("id") == rid and "ok" in f)

    async def refused(self) -> tuple[dict, int]:
        """The error frame and the close code of a refused socket."""
        error = await self.frame()
        msg = await asyncio.wait_for(self.ws.receive(), 10)
        assert msg.type == aiohttp.WSMsgType.CLOSE, msg
        return error, msg.data

    async def closed(self) -> int:
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 10)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return msg.data if msg.type == aiohttp.WSMsgType.CLOSE else self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
