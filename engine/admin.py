"""The client manager of a Socket.IO server serving python-socketio's Admin UI
instrumentation (`AsyncServer.instrument`): `/admin` broadcasts shared with the
other instances, credentials redacted from what the UI is shown.

It is here, not with the hub's admin UI page (hub/adapters/admin_ui.py), because it reaches
private state of python-socketio's instrument(): it pops the `_timestamps` entry
instrument() keeps on the manager per connected socket, for connections refused by
their namespace, which instrument() never removes; it also relies on the shapes of
instrument()'s /admin events (`redacted`) and on which socket instrument()
addresses `all_sockets` to. engine/internals.py lists these. The application gives
it `share` (send an /admin broadcast to the other instances) and `instrumented`.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from engine import internals
from engine.manager import HubManager


ADMIN_NAMESPACE = "/admin"
ANNOUNCE = "hub:announce"  # a shared /admin message asking the instances to list their sockets
# Credentials never shown to the Admin UI: the request headers and query parameters
# that may carry a token, and the payload of the token events (auth:refresh).
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
SECRET_QUERY = frozenset({"token", "access_token", "auth"})
HIDDEN = "[hidden]"


def redacted(event: str, data):
    """An /admin event's data without credentials (instrument() reports the
    handshake's headers and query of each socket, and every event's payload)."""
    if event in ("socket_connected", "all_sockets"):
        sockets = data if event == "all_sockets" else [data[0]]
        for socket in sockets:
            handshake = socket.get("handshake", {})
            for part, secret in (("headers", SECRET_HEADERS), ("query", SECRET_QUERY)):
                values = handshake.get(part, {})
                for name in values:
                    if name.lower() in secret:
                        values[name] = HIDDEN
    elif event in ("event_received", "event_sent") and str(data[2][0]).startswith("auth:"):
        data = (*data[:2], [data[2][0], HIDDEN], *data[3:])
    return data


class AdminUIManager(HubManager):
    """The manager of a server serving the Socket.IO Admin UI (the hub: hub/adapters/admin_ui.py):
    broadcasts to the whole `/admin` namespace also go to the other instances
    (`share`, Fanout.share), and `emit_here` delivers theirs. Other namespaces'
    emits are HubManager's."""

    # share(namespace, event, args): the same broadcast on the other instances.
    share: Callable[[str, str, list], Awaitable[Any]] | None = None
    instrumented = None  # what sio.instrument() returned (serializes sockets)

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        if namespace == ADMIN_NAMESPACE:
            data = redacted(event, data)
        if namespace == ADMIN_NAMESPACE and event == "all_sockets":
            # Sent when an admin connects. python-socketio 5.18.1's instrument()
            # addresses it to the last socket it listed (its loop reuses the name
            # `sid`), never an /admin one: this instance's admins get it instead.
            await super().emit(event, data, namespace, room=[None], **kwargs)
            # It lists this instance's sockets, and the UI replaces its list with
            # it: the other instances announce theirs after it.
            if self.share is not None:
                await self.share(ADMIN_NAMESPACE, ANNOUNCE, [])
            return
        if namespace == ADMIN_NAMESPACE and to is None and room is None and self.share is not None:
            await self.share(ADMIN_NAMESPACE, event, list(data) if isinstance(data, tuple) else [data])
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                                  to=to, **kwargs)

    async def emit_here(self, event: str, args: list) -> None:
        if event == ANNOUNCE:
            return await self.announce()
        await super().emit(event, tuple(args), ADMIN_NAMESPACE)

    async def announce(self) -> None:
        """Every socket of this instance, to the admins of every instance."""
        now = datetime.now(timezone.utc).isoformat()
        for namespace in list(self.get_namespaces()):
            for sid, eio_sid in list(self.get_participants(namespace, None)):
                try:
                    socket = self.instrumented.serialize_socket(sid, namespace, eio_sid)
                except KeyError:  # gone meanwhile
                    continue
                await self.emit("socket_connected", (socket, now), ADMIN_NAMESPACE)

    async def disconnect(self, sid, namespace, **kwargs):
        # instrument() records a socket in `_timestamps` and reports it connected
        # before its connect handler runs, and forgets and reports it on its
        # disconnect event, which runs before this. Still there: a connection its
        # namespace refused, which has no disconnect event.
        await super().disconnect(sid, namespace, **kwargs)
        if getattr(self, internals.INSTRUMENT_TIMESTAMPS, {}).pop(sid, None) is not None:
            await self.emit("socket_disconnected", (namespace, sid, "connection refused",
                                                   datetime.now(timezone.utc).isoformat()), ADMIN_NAMESPACE)
