"""Plain WebSocket serving, shared by every gateway, and the generic protocol at `/ws`.

Every plain socket: the token comes as `?token=` or in a first `{"token": ...}` frame;
a refused one gets `{"type": "error", "error": {...}}` and a close (4401 unauthorized,
4403 forbidden, 4400 otherwise). Then it may send requests for any registry operation,
`{"id", "ns"?, "event", "data"}`, answered by `{"id", "ok", "data" | "error"}` (`ns`
defaults to the gateway's own namespace), and `{"type": "ping"}`, answered by
`{"type": "pong"}`; websocket pings keep it alive (`HEARTBEAT`). Requests have the
Socket.IO sockets' rate and payload limits.

The generic `/ws` (for clients without a Socket.IO library) is attached to every
namespace its token may use, or those of `?ns=/chat,/notifications`. Its server
events are `{"ns", "event", "data", "offset"}`. Its first frame from the server is
`{"type": "welcome", "session", "recovered": {ns: bool}}`; a client that reconnects
sends `{"token"?, "resume": {"session", "offsets": {ns: last offset seen}}}` as its
first frame and gets, within the recovery window, everything it missed and nothing
twice; a namespace not recovered is re-read with its `sync` operation."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import WSMsgType, web

from handlers.errors import Forbidden, HubError, InternalError, Unauthorized, ValidationFailed
from handlers.registry import REGISTRY
from engine import ready_transport
from hub.adapters.gateways.mapping import Generic
from hub.adapters.gateways.members import Member
from hub.adapters.gateways.session import Connection, new_sid
from hub.adapters.http.common import HUB
from hub.backends.bus import valid_offset
from storage.jsoncodec import dumps

log = logging.getLogger("hub.gateways")

HEARTBEAT = 25.0  # seconds between websocket pings; a peer silent for half of it more is closed
FIRST_FRAME_TIMEOUT = 10.0
MAX_FRAME = 1_000_000  # beyond this the socket is closed; beyond max_payload_bytes a request is refused
CLOSE_CODES = {"unauthorized": 4401, "forbidden": 4403, "not_found": 4404, "internal_error": 1011}


@dataclass
class Gateway:
    """One plain WebSocket endpoint: its kind of frames, its default namespace for
    requests, and `open`, which authorizes the path and attaches the connection
    (given the request and the first frame, if the token came in one)."""

    kind_name: str
    make_kind: Callable
    namespace: str | None
    open: Callable[[web.Request, Connection, dict], Awaitable[None]]


def kind_of(hub, gateway: Gateway):
    """One kind object per instance and gateway: frames are rendered once per kind."""
    kinds = hub.fanout.members.kinds
    if gateway.kind_name not in kinds:
        kinds[gateway.kind_name] = gateway.make_kind(hub)
    return kinds[gateway.kind_name]


async def _first(ws: web.WebSocketResponse) -> dict:
    try:
        msg = await asyncio.wait_for(ws.receive(), FIRST_FRAME_TIMEOUT)
    except asyncio.TimeoutError:
        raise Unauthorized("send the token first") from None
    if msg.type != WSMsgType.TEXT:
        raise Unauthorized("send the token first")
    try:
        frame = json.loads(msg.data)
    except ValueError:
        raise ValidationFailed("frames are JSON objects") from None
    if not isinstance(frame, dict):
        raise ValidationFailed("frames are JSON objects")
    return frame


async def serve(request: web.Request, gateway: Gateway) -> web.WebSocketResponse:
    hub = request.app[HUB]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, compress=hub.settings.ws_compression)
    await ws.prepare(request)
    conn: Connection | None = None
    writer: asyncio.Task | None = None
    try:
        try:
            token = request.query.get("token")
            hello = {} if token else await _first(ws)
            if not token:
                token = hello.get("token")
                if not isinstance(token, str):
                    raise Unauthorized("missing token")
            actor = await hub.auth.actor(token)
            member = Member(new_sid(), kind_of(hub, gateway), ws.send_str,
                            lambda code, reason: ws.close(code=code, message=reason.encode()),
                            direct=ready_transport(ws))
            conn = Connection(hub, actor, member)
            await gateway.open(request, conn, hello)
        except Exception as exc:
            if not isinstance(exc, HubError):
                log.exception("opening a plain socket at %s failed", request.path)
                exc = InternalError()
            await ws.send_str(dumps({"type": "error", "error": exc.body()}))
            await ws.close(code=CLOSE_CODES.get(exc.code, 4400), message=exc.code.encode())
            return ws
        writer = asyncio.create_task(member.run(), name=f"plain-writer-{member.sid}")
        tasks: set[asyncio.Task] = set()
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                member.send(dumps({"type": "error", "error": ValidationFailed("frames are JSON text").body()}))
                continue
            task = asyncio.create_task(_answer(conn, gateway, msg.data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in list(tasks):
            task.cancel()
    finally:
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)  # a gone client's write error
        if conn is not None:
            await conn.close()
    return ws


async def _answer(conn: Connection, gateway: Gateway, text: str) -> None:
    """One frame from the client: a request, a ping, or an error."""
    member = conn.member
    try:  # frames beyond MAX_FRAME never get here; the request's own limit is checked with its id
        frame = json.loads(text)
    except (ValueError, RecursionError):
        frame = None
    if not isinstance(frame, dict):
        member.send(dumps({"type": "error", "error": ValidationFailed("frames are JSON objects").body()}))
        return
    if frame.get("type") == "ping":
        member.send('{"type":"pong"}')
        return
    rid, event, namespace = frame.get("id"), frame.get("event"), frame.get("ns", gateway.namespace)
    if not isinstance(event, str) or not isinstance(namespace, str) or not (
            rid is None or isinstance(rid, (int, str)) and len(str(rid)) <= 64):
        error = ValidationFailed("a request is {id, ns, event, data}").body()
        member.send(dumps({"id": rid if isinstance(rid, (int, str)) else None, "ok": False, "error": error}))
        return
    reply = await conn.request(namespace, event, frame.get("data"), size=len(text))
    member.send(dumps({"id": rid, **reply}))


# --- the generic protocol ------------------------------------------------------------

def _namespaces(request: web.Request, conn: Connection) -> list[str]:
    asked = request.query.get("ns")
    if asked:
        names = list(dict.fromkeys(n for n in asked.split(",") if n))
        if len(names) > len(REGISTRY.namespaces) or any(n not in REGISTRY.namespaces for n in names):
            raise ValidationFailed("ns: a comma-separated list of namespaces")
        return names
    return [name for name, spec in REGISTRY.namespaces.items() if conn.actor.acts_as in spec.roles]


def _resume(hello: dict, query) -> tuple[str | None, dict[str, str]]:
    """From the first frame's `resume`, or (with ?token=) `?session=&offsets=<JSON>`."""
    resume = hello.get("resume")
    if resume is None and "session" in query:
        try:
            resume = {"session": query["session"], "offsets": json.loads(query.get("offsets") or "{}")}
        except ValueError:
            raise ValidationFailed("offsets: a JSON object {namespace: offset}") from None
    if resume is None:
        return None, {}
    session, offsets = (resume.get("session"), resume.get("offsets") or {}) if isinstance(resume, dict) else (None, None)
    if not (isinstance(session, str) and 8 <= len(session) <= 40 and isinstance(offsets, dict)
            and all(isinstance(k, str) and valid_offset(v) for k, v in offsets.items())):
        raise ValidationFailed("resume is {session, offsets: {namespace: offset}}")
    return session, offsets


async def open_generic(request: web.Request, conn: Connection, hello: dict) -> None:
    hub, member = conn.hub, conn.member
    namespaces = _namespaces(request, conn)
    if not namespaces:
        raise Forbidden(f"{conn.actor.acts_as} tokens cannot use any namespace")
    session, offsets = _resume(hello, request.query)
    resuming = session is not None
    session = session or hub.recovery.new_pid()
    if resuming:
        member.hold()
    recovered: dict[str, bool] = {}
    replayed: list[tuple[str, str, str]] = []
    heads: dict[str, str | None] = {}
    for namespace in namespaces:
        replay = await conn.attach(namespace, session=session, offset=offsets.get(namespace), resuming=resuming)
        recovered[namespace] = replay is not None
        if replay is not None:
            heads[namespace] = replay.head
            replayed += [(namespace, offset, member.kind.frame(namespace, event.event, event.data, offset))
                         for offset, event in replay.entries]
    member.send(dumps({"type": "welcome", "session": session, "recovered": recovered,
                       "window": hub.recovery.window}))
    if resuming:
        member.release(replayed, heads)


GENERIC = Gateway("generic", lambda hub: Generic(), None, open_generic)


async def generic(request: web.Request) -> web.WebSocketResponse:
    return await serve(request, GENERIC)


def routes() -> list[web.RouteDef]:
    return [web.get("/ws", generic)]
