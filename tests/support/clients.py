"""Real clients of a running hub: HTTP (Api) and python-socketio (Client)."""
from __future__ import annotations

import asyncio
import secrets
from typing import Any, Callable

import aiohttp
import socketio

from tests.support.teardown import bounded


class Api:
    """A small HTTP client for a running hub."""

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self.url, self.session = url, session

    async def request(self, method: str, path: str, *, token: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.url + path, headers=headers, **kw) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body

    async def user(self, email: str | None = None, password: str = "password123", **names) -> dict:
        """Register and log in a new user; returns the login response."""
        email = email or f"u{secrets.token_hex(5)}@example.com"
        status, body = await self.request("POST", "/auth/register", json={"email": email, "password": password, **names})
        assert status == 201, body
        status, body = await self.request("POST", "/auth/login", json={"email": email, "password": password})
        assert status == 200, body
        return body


class Client:
    """A real python-socketio client on one namespace, recording server events."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, asyncio.Queue] = {}
        self.offsets: dict[str, list[str]] = {}
        self.sio.on("*", self._record, namespace=namespace)
        self.connect_error = None
        self.sio.on("connect_error", self._connect_error, namespace=namespace)

    async def _record(self, event, data=None, *rest):
        # Durable events carry their recovery offset as a last, extra argument.
        if rest:
            self.offsets.setdefault(event, []).append(rest[-1])
        self.queue(event).put_nowait(data)

    async def _connect_error(self, data):
        self.connect_error = data

    def queue(self, event: str) -> asyncio.Queue:
        return self.events.setdefault(event, asyncio.Queue())

    async def connect(self, url: str, token: str | None, transports=None):
        auth = {"token": token} if token else None
        await self.sio.connect(url, namespaces=[self.namespace], auth=auth, transports=transports,
                               wait_timeout=5)
        return self

    async def call(self, event: str, data=None, timeout: float = 10):
        return await self.sio.call(event, {} if data is None else data, namespace=self.namespace, timeout=timeout)

    async def ok(self, event: str, data=None):
        reply = await self.call(event, data)
        assert reply["ok"], reply
        return reply["data"]

    async def error(self, event: str, data=None) -> str:
        reply = await self.call(event, data)
        assert not reply["ok"], reply
        return reply["error"]["code"]

    async def next(self, event: str, timeout: float = 5):
        return await asyncio.wait_for(self.queue(event).get(), timeout)

    async def absent(self, event: str, *, until: str, where: Callable[[Any], bool] | None = None,
                     timeout: float = 5):
        """Prove that no `event` reached this client, without a sleep: `until` is a later
        event the test caused after the action under test, one that reaches this client
        after any `event` would have (same emitter, same room or socket, one ordered
        path). Wait for it (the first one `where` accepts), then no `event` may be
        queued. When `event` and `until` are the same name, the first one to arrive must
        be the later one. Returns `until`'s data."""
        while True:
            data = await self.next(until, timeout)
            if where is None or where(data):
                break
            assert event != until, f"{event} arrived before the later one: {data}"
        early = list(self.queue(event)._queue)  # noqa: SLF001 (a read of what is queued)
        assert not early, f"{event} arrived before {until}: {early}"
        return data

    async def close(self):
        await bounded(self.sio.disconnect(), "closing a Socket.IO client")


async def connect_refusal(url: str, namespace: str, token: str) -> dict | None:
    """The connect_error data a real client gets with `token` (None: it connected)."""
    sio = socketio.AsyncClient(reconnection=False)
    refused: dict = {}
    sio.on("connect_error", lambda data: refused.update(data or {}), namespace=namespace)
    try:
        await sio.connect(url, namespaces=[namespace], auth={"token": token}, wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        return refused.get("data")  # python-socketio wraps the CONNECT_ERROR data
    await sio.disconnect()
    return None
