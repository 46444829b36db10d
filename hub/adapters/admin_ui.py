"""The Socket.IO Admin UI (https://socket.io/docs/v4/admin-ui/), off unless
HUB_ADMIN_UI is on (docs/operations.md, "Socket.IO Admin UI").

* The `/admin` namespace is python-socketio's own instrumentation
  (`socketio.AsyncServer.instrument`, its public API), admitting only an admin's
  access token: the UI's login form sends `{username, password}`, so the admin
  enters any user name and the token as the password (`{token}` works as well).
* Its broadcasts (server stats, sockets connected, rooms joined, events) reach the
  admin sockets of every instance: engine.AdminUIManager sends them over the hub's bus
  as volatile messages (Fanout.share), so the UI lists every server. Only `/admin`
  broadcasts take that way; every other emit is HubManager's.
* The official front end (npm `@socket.io/admin-ui`, installed by
  `npm ci --prefix web`) is served at `/admin-ui/` with a policy that lets it load
  and connect to this origin only.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from handlers.errors import HubError, NotFound, Unavailable
from hub.adapters.http.web import NO_CACHE, WEB
from engine import ADMIN_NAMESPACE as NAMESPACE, AdminUIManager

DIST = WEB / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
# Its own scripts and styles (Vuetify sets inline styles); the web fonts and icon
# font it links from CDNs are refused, so it renders with the browser's fonts.
POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
          "form-action 'self'; frame-ancestors 'none'")


def instrument(hub) -> None:
    """Serve `/admin` on hub.sio (built with an AdminUIManager and `/admin` among
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

    manager: AdminUIManager = hub.sio.manager
    manager.share = hub.fanout.share
    hub.fanout.shared[NAMESPACE] = manager.emit_here
    # Read-only: the UI's emit, join, leave and disconnect actions would put
    # sockets in rooms and send them events past every check of the hub.
    manager.instrumented = hub.sio.instrument(auth=is_admin, namespace=NAMESPACE, read_only=True,
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
