"""Server-Sent Events: `GET /sse?ns=/notifications&token=...` (or the `hub_token` cookie,
or a bearer header: EventSource cannot set headers). Each event's `id:` is its log
offset, so the browser's own reconnect sends `Last-Event-ID` and gets, within the
recovery window, every event it missed, then the live ones, none twice. Beyond the
window (or with recovery off) it first gets `event: sync`: re-read the state (e.g.
`GET /api/notifications`). A comment line every `HEARTBEAT` seconds keeps proxies
from closing an idle stream and finds dead connections."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from handlers.errors import Forbidden, ValidationFailed
from handlers.registry import REGISTRY
from hub.adapters.gateways.mapping import ServerSentEvents
from hub.adapters.gateways.members import Member
from hub.adapters.gateways.plainws import HEARTBEAT
from hub.adapters.gateways.session import Connection, new_sid
from hub.adapters.http.common import HUB, bearer
from hub.backends.bus import offset_key, valid_offset
from hub.delivery.records import Replayed
from storage.jsoncodec import dumps

COOKIE = "hub_token"
RETRY_MS = 2000  # the browser's reconnect delay


def _token(request: web.Request) -> str | None:
    return request.query.get("token") or request.cookies.get(COOKIE) or bearer(request)


async def _missed(hub, namespace: str, member: Member, last: str) -> Replayed | None:
    """The events of the stream's rooms after `last` (read as `Recovery.resume` does),
    or None when they cannot all be had. A stream has no session record: its rooms
    are those it is in now, and `last` must be within the recovery window."""
    window = hub.recovery.window
    if window <= 0 or offset_key(last)[0] < (time.time() - window) * 1000:
        return None
    rooms = sorted(hub.fanout.members.rooms_of(member, namespace))
    return await hub.recovery.resume(namespace, rooms, member.sid, last, sid=member.sid)


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    namespace = request.query.get("ns", "")
    if namespace not in REGISTRY.namespaces:
        raise ValidationFailed("ns: one of " + ", ".join(sorted(REGISTRY.namespaces)))
    actor = await hub.auth.actor(_token(request))
    if actor.acts_as not in REGISTRY.namespaces[namespace].roles:
        raise Forbidden(f"{actor.acts_as} tokens cannot use {namespace}")
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if last is not None and not valid_offset(last):
        raise ValidationFailed("Last-Event-ID: an offset this stream sent")

    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    kind = hub.fanout.members.kinds.setdefault("sse", ServerSentEvents())
    writer: asyncio.Task | None = None

    async def close(code: int, reason: str) -> None:
        if writer is not None:
            writer.cancel()

    member = Member(new_sid(), kind, lambda frame: response.write(frame.encode()), close)
    conn = Connection(hub, actor, member)
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        if last is not None:
            member.hold()
        await conn.attach(namespace)
        if last is not None:
            missed = await _missed(hub, namespace, member, last)
            if missed is None:
                now = f"{int(time.time() * 1000)}-0"
                member.send(f"id: {now}\nevent: sync\ndata: {dumps({'ns': namespace, 'reason': 'gap'})}\n\n")
                member.release([], {})
            else:
                member.release([(namespace, o, kind.frame(namespace, e.event, e.data, o)) for o, e in missed.entries],
                               {namespace: missed.head})
        writer = asyncio.create_task(member.run(), name=f"sse-writer-{member.sid}")
        while not writer.done():
            await asyncio.wait([writer], timeout=HEARTBEAT)
            member.send(": keep-alive\n\n")
    finally:
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)  # a gone client's write error
        await conn.close()
    return response


def routes() -> list[web.RouteDef]:
    return [web.get("/sse", stream)]
