"""The AI-assistant platform's sockets: `/ws/dialog/{dialog_id}` (the assistant's owner
and staff), `/ws/site-dialog/{dialog_id}` and `/ws/widget-dialog/{dialog_id}` (the
dialog's visitor, with the visitor token of POST /api/widget/sessions: a dialog is
never readable without it) and `/ws/operator/{operator_id}` (an operator's
dashboard). Frames are `{"type": "message_added", "data": {...}}` and the like
(hub/adapters/gateways/mapping.py); requests default to the path's namespace."""
from __future__ import annotations

from aiohttp import web

from handlers.errors import Forbidden
from hub.adapters.gateways.mapping import Dialogs
from hub.adapters.gateways.plainws import Gateway, serve
from hub.adapters.gateways.session import Connection

STAFF_ROLES = ("user", "operator", "admin")


def _path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


async def _staff_dialog(request: web.Request, conn: Connection, hello: dict) -> None:
    if conn.actor.role not in STAFF_ROLES:
        raise Forbidden("/ws/dialog is for the assistant's owner and staff; visitors use /ws/widget-dialog")
    await conn.attach("/dialogs")
    # The operation authorizes the dialog and joins its room, as over Socket.IO.
    await conn.run("/dialogs", "dialog:join", {"dialog_id": _path_id(request, "dialog_id")})


async def _visitor_dialog(request: web.Request, conn: Connection, hello: dict) -> None:
    actor = conn.actor
    if actor.role != "visitor" or actor.dialog_id != _path_id(request, "dialog_id"):
        raise Forbidden("a visitor token of this dialog is required (POST /api/widget/sessions)")
    await conn.attach("/dialogs")  # a visitor is in its dialog's room from the start


async def _operator(request: web.Request, conn: Connection, hello: dict) -> None:
    actor = conn.actor
    if actor.role not in ("operator", "admin") or actor.id != _path_id(request, "operator_id"):
        raise Forbidden("this socket is the token's own operator's: /ws/operator/{your user id}")
    await conn.attach("/operators")


def _gateway(namespace: str, open_) -> Gateway:
    return Gateway("dialogs", lambda hub: Dialogs(), namespace, open_)


STAFF_DIALOG = _gateway("/dialogs", _staff_dialog)
VISITOR_DIALOG = _gateway("/dialogs", _visitor_dialog)
OPERATOR = _gateway("/operators", _operator)


def _handler(gateway: Gateway):
    async def handle(request: web.Request) -> web.WebSocketResponse:
        return await serve(request, gateway)
    return handle


def routes() -> list[web.RouteDef]:
    return [
        web.get(r"/ws/dialog/{dialog_id:\d+}", _handler(STAFF_DIALOG)),
        web.get(r"/ws/site-dialog/{dialog_id:\d+}", _handler(VISITOR_DIALOG)),
        web.get(r"/ws/widget-dialog/{dialog_id:\d+}", _handler(VISITOR_DIALOG)),
        web.get(r"/ws/operator/{operator_id:\d+}", _handler(OPERATOR)),
    ]
