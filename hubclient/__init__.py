"""A small Python client of the hub for bots and backend services.

    async with Client("http://127.0.0.1:8000", token) as hub:
        chat = await hub.connect("/chat", {"message:new": on_message})   # handler(data)
        message = await chat.call("message:send", {"recipient_id": 2, "message": "hi"})
        async with dialogs.stream(dialog_id) as reply:                    # bots: a streamed reply
            await reply.send("Hel"); await reply.send("lo!")
        await hub.publish("/notifications", "notification:new", {...}, user_ids=[2])  # service tokens

* `call` returns the ack's `data`, or raises `HubError` with the contract's `code`,
  `message` and `details`.
* Each namespace is its own connection, which reconnects by itself and recovers what
  it missed meanwhile (the hub's connection state recovery: the session id of the
  CONNECT reply and the offset of the last event are sent back on reconnect).
* When a reconnect could not recover (the recovery window passed, the hub lost the
  session), the `on_gap` handlers run: the place to `sync` (`Namespace.sync` pages
  through it).

Built on python-socketio's AsyncClient. python-socketio keeps only the `sid` of the
CONNECT reply; engine.client.ConnectReplyClient gives `_Connection` its `pid`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import aiohttp

from engine.client import ConnectReplyClient

__all__ = ["Client", "HubError", "Namespace", "StreamedReply"]

Handler = Callable[[Any], Awaitable[None] | None]


class HubError(Exception):
    """A request the hub refused: `code` is the contract's (validation_error, ...)."""

    def __init__(self, code: str, message: str, details: Any = None, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.details, self.status = code, message, details, status


class _Connection(ConnectReplyClient):
    def __init__(self, namespace: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.hub_namespace = namespace
        self.pid: str | None = None
        self.pid_changed = False

    def connect_reply(self, namespace: str, data) -> None:
        # python-socketio reads only `sid` from the CONNECT reply; the hub adds `pid`.
        if namespace == self.hub_namespace:
            pid = (data or {}).get("pid")
            self.pid_changed = pid is None or pid != self.pid
            self.pid = pid


class Namespace:
    """One namespace of the hub, on a connection of its own."""

    def __init__(self, client: "Client", name: str) -> None:
        self.client, self.name = client, name
        self.offset: str | None = None  # of the last durable event received
        self._gap_handlers: list[Callable[["Namespace"], Awaitable[None]]] = []
        self._connected_once = False
        self.sio = _Connection(name, reconnection=True, reconnection_delay_max=client.reconnect_delay_max)
        self.sio.on("connect", self._on_connect, namespace=name)

    def on(self, event: str, handler: Handler) -> None:
        """Run `handler(data)` for each `event`; durable events' offsets are kept for recovery."""

        async def receive(data=None, *rest):
            if rest and isinstance(rest[-1], str):
                self.offset = rest[-1]
            result = handler(data)
            if asyncio.iscoroutine(result):
                await result

        self.sio.on(event, receive, namespace=self.name)

    def on_gap(self, handler: Callable[["Namespace"], Awaitable[None]]) -> None:
        """Run `handler(namespace)` after a reconnect that could not recover missed events."""
        self._gap_handlers.append(handler)

    async def call(self, event: str, data: dict | None = None, timeout: float = 10) -> Any:
        reply = await self.sio.call(event, {} if data is None else data, namespace=self.name, timeout=timeout)
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = (reply or {}).get("error") or {}
            raise HubError(error.get("code", "internal_error"), error.get("message", "no answer"),
                           error.get("details"))
        return reply["data"]

    def stream(self, dialog_id: int, min_interval: float = 0.06) -> "StreamedReply":
        """A bot's reply streamed into a dialog of /dialogs (see StreamedReply)."""
        return StreamedReply(self, dialog_id, min_interval)

    async def sync(self, since: str | None, limit: int = 200) -> tuple[list[dict], str]:
        """Everything changed since the cursor `since` (None: everything), all pages;
        returns the items and the cursor for the next time."""
        items: list[dict] = []
        while True:
            page = await self.call("sync", {"since": since, "limit": limit})
            items += page["items"]
            since = page["cursor"]
            if not page["has_more"]:
                return items, since

    def _auth(self) -> dict:
        auth = {"token": self.client.token}
        if self.sio.pid:
            auth["pid"] = self.sio.pid
            if self.offset:
                auth["offset"] = self.offset
        return auth

    async def _on_connect(self) -> None:
        reconnected, self._connected_once = self._connected_once, True
        if reconnected and self.sio.pid_changed:
            for handler in self._gap_handlers:
                asyncio.get_running_loop().create_task(handler(self))

    async def _connect(self) -> None:
        await self.sio.connect(self.client.url, namespaces=[self.name], auth=self._auth,
                               transports=["websocket"], wait_timeout=10)


class StreamedReply:
    """`async with dialogs.stream(dialog_id) as reply: await reply.send(text)`: the
    text reaches the dialog as `message:delta`s; leaving the block ends the reply,
    which the hub stores (`reply.message`). Text sent less than `min_interval`
    seconds after the previous delta waits and goes with the next one (or the end):
    an LLM's tokens then cost at most 1/min_interval events a second, within the
    connection's event budget. If an operator takes the dialog over meanwhile, `send`
    raises HubError `conflict`, the hub has stored what was sent as interrupted
    (`reply.interrupted`), and the block ends quietly."""

    def __init__(self, ns: Namespace, dialog_id: int, min_interval: float = 0.06) -> None:
        self.ns, self.dialog_id, self.min_interval = ns, dialog_id, min_interval
        self.stream_id: str | None = None
        self.message: dict | None = None
        self.interrupted = False
        self._held = ""
        self._last = 0.0

    async def __aenter__(self) -> "StreamedReply":
        self.stream_id = (await self.ns.call("message:stream-start", {"dialog_id": self.dialog_id}))["stream_id"]
        return self

    async def send(self, text: str) -> int | None:
        """Add `text`; the seq of the delta that carried it, or None while it waits."""
        self._held += text
        now = asyncio.get_running_loop().time()
        if now - self._last < self.min_interval:
            return None
        return await self._flush(now)

    async def _flush(self, now: float) -> int | None:
        if not self._held:
            return None
        text, self._held, self._last = self._held, "", now
        try:
            return (await self.ns.call("message:stream-delta", {"stream_id": self.stream_id, "text": text}))["seq"]
        except HubError as exc:
            self.interrupted = exc.code == "conflict"
            raise

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        if not self.interrupted and exc_type is None:
            try:
                await self._flush(asyncio.get_running_loop().time())
            except HubError:
                if not self.interrupted:
                    raise
        if self.interrupted:
            return exc_type in (None, HubError)  # cut by a takeover: stored already, nothing to end
        self.message = await self.ns.call("message:stream-end", {"stream_id": self.stream_id})
        return False


class Client:
    def __init__(self, url: str, token: str, *, reconnect_delay_max: float = 5) -> None:
        self.url, self.token = url.rstrip("/"), token
        self.reconnect_delay_max = reconnect_delay_max
        self.namespaces: dict[str, Namespace] = {}

    async def connect(self, namespace: str, handlers: dict[str, Handler] | None = None) -> Namespace:
        """Connect to a namespace (each on its own connection), with `handlers`
        (event -> handler) registered first, so that no event is missed."""
        ns = self.namespaces.get(namespace)
        if ns is None:
            ns = self.namespaces[namespace] = Namespace(self, namespace)
            for event, handler in (handlers or {}).items():
                ns.on(event, handler)
            await ns._connect()
        return ns

    async def publish(self, namespace: str, event: str, data: dict, *, user_ids: list[int] | None = None,
                      room: str | None = None) -> dict:
        """POST /api/publish (service tokens): send a publishable server event to users or a room."""
        to = {"user_ids": user_ids} if user_ids is not None else {"room": room}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{self.url}/api/publish", json={"namespace": namespace, "event": event,
                                                                     "to": to, "data": data},
                                    headers={"Authorization": f"Bearer {self.token}"}) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    error = (body or {}).get("error") or {}
                    raise HubError(error.get("code", "internal_error"), error.get("message", resp.reason or ""),
                                   error.get("details"), resp.status)
                return body

    async def close(self) -> None:
        for ns in self.namespaces.values():
            await ns.sio.disconnect()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
