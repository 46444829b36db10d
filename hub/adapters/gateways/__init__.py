"""Existing clients' own protocols over the hub's operations and its one fan-out:
plain WebSocket gateways (generic `/ws`, EduStream's `/ws/{user_id}`, the AI
platform's dialog and operator sockets) and Server-Sent Events. docs/clients.md."""
from __future__ import annotations

from aiohttp import web


def routes() -> list[web.RouteDef]:
    # Imported here: hub.delivery.fanout imports this package for its members, before the HTTP side exists.
    from hub.adapters.gateways import dialogs, edustream, plainws, sse
    return plainws.routes() + edustream.routes() + dialogs.routes() + sse.routes()
