"""EduStream's socket, `/ws/{user_id}`: the user's chat messages and notifications as
flat `{"type": "new_message" | "message_sent" | "booking_update" | "notification", ...}`
frames (hub/adapters/gateways/mapping.py). The app sends through the REST mirror; requests on
the socket itself default to /chat."""
from __future__ import annotations

from aiohttp import web

from handlers.errors import Forbidden
from hub.adapters.gateways.mapping import EduStream
from hub.adapters.gateways.plainws import Gateway, serve
from hub.adapters.gateways.session import Connection

NAMESPACES = ("/chat", "/notifications")


async def _open(request: web.Request, conn: Connection, hello: dict) -> None:
    if conn.actor.id is None or conn.actor.id != int(request.match_info["user_id"]):
        raise Forbidden("this socket is the token's own user's: /ws/{your user id}")
    for namespace in NAMESPACES:
        await conn.attach(namespace)


EDUSTREAM = Gateway("edustream", lambda hub: EduStream(hub.db), "/chat", _open)


async def user_socket(request: web.Request) -> web.WebSocketResponse:
    return await serve(request, EDUSTREAM)


def routes() -> list[web.RouteDef]:
    return [web.get(r"/ws/{user_id:\d+}", user_socket)]
