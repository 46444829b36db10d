"""The Socket.IO Admin UI (https://socket.io/docs/v4/admin-ui/), off unless
HUB_ADMIN_UI is on (docs/operations.md, "Socket.IO Admin UI").

* The `/admin` namespace is python-socketio's own instrumentation
  (`socketio.AsyncServer.instrument`, its public API), admitting only an admin's
  access token: the UI's login form sends `{username, password}`, so the admin
  enters any user name and the token as the password (`{token}` works as well).
* Its broadcasts (server stats, sockets connected, rooms joined, events) reach the
  admin sockets of every instance: `SharingManager` sends them over the hub's bus
  as volatile messages (Fanout.share), so the UI lists every server. Only `/admin`
  broadcasts take that way; every other emit is HubManager's.
* The official front end (npm `@socket.io/admin-ui`, installed by
  `npm ci --prefix web`) is served at `/admin-ui/` with a policy that lets it load
  and connect to this origin only.
"""
from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from handlers.errors import HubError, NotFound, Unavailable
from hub.http.web import NO_CACHE, WEB
from hub.manager import HubManager

NAMESPACE = "/admin"
ANNOUNCE = "hub:announce"  # a shared /admin message asking the instances to list their sockets
DIST = WEB / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
# Its own scripts and styles (Vuetify sets inline styles); the web fonts and icon
# font it links from CDNs are refused, so it renders with the browser's fonts.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'")


class SharingManager(HubManager):
    """HubManager whose broadcasts to the whole `/admin` namespace also go to the
    other instances (`share`, set by `instrument`); `emit_here` delivers theirs."""

    share = None
    instrumented = None  # what hub.sio.instrument() returned (serializes sockets)

    async def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None, to=None, **kwargs):
        if namespace == NAMESPACE and event == "all_sockets":
            # Sent when an admin connects. python-socketio 5.18.1's instrument()
            # addresses it to the last socket it listed (its loop reuses the name
            # `sid`), never an /admin one: this instance's admins get it instead.
            await super().emit(event, data, namespace, room=[None], **kwargs)
            # It lists this instance's sockets, and the UI replaces its list with
            # it: the other instances announce theirs after it.
            if self.share is not None:
                await self.share(NAMESPACE, ANNOUNCE, [])
            return
        if namespace == NAMESPACE and to is None and room is None and self.share is not None:
            await self.share(NAMESPACE, event, list(data) if isinstance(data, tuple) else [data])
        return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback,
                                  to=to, **kwargs)

    async def emit_here(self, event: str, args: list) -> None:
        if event == ANNOUNCE:
            return await self.announce()
        await super().emit(event, tuple(args), NAMESPACE)

    async def announce(self) -> None:
        """Every socket of this instance, to the admins of every instance."""
        now = datetime.now(timezone.utc).isoformat()
        for namespace in list(self.get_namespaces()):
            for sid, eio_sid in list(self.get_participants(namespace, None)):
                try:
                    socket = self.instrumented.serialize_socket(sid, namespace, eio_sid)
                except KeyError:  # gone meanwhile
                    continue
                await self.emit("socket_connected", (socket, now), NAMESPACE)


def instrument(hub) -> None:
    """Serve `/admin` on hub.sio (built with a SharingManager and `/admin` among
    its namespaces) to admins only, sharing its broadcasts with the other instances."""

    async def is_admin(auth) -> bool:
        if not isinstance(auth, dict):
            return False
        token = auth.get("token") or auth.get("password")
        if not isinstance(token, str) or len(token) > 4096:
            return False
        try:
            actor = await hub.auth.actor(token)
        except HubError:
            return False
        return actor.role == "admin"

    manager: SharingManager = hub.sio.manager
    manager.share = hub.fanout.share
    hub.fanout.shared[NAMESPACE] = manager.emit_here
    manager.instrumented = hub.sio.instrument(auth=is_admin, namespace=NAMESPACE,
                                              server_id=hub.settings.instance_id)


async def page(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("name") or "index.html"
    if not DIST.is_dir():
        raise Unavailable("the admin UI is not installed: run `npm ci --prefix web`")
    root = DIST.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound("no such file")
    return web.FileResponse(path, headers={**NO_CACHE, "Content-Security-Policy": POLICY})


async def to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/admin-ui/")


def routes() -> list[web.RouteDef]:
    return [web.get("/admin-ui", to_page), web.get("/admin-ui/{name:.*}", page)]
