"""Delivery to this instance's Socket.IO sockets, and the seam for events that go
to them another way (`LocalDelivery`: coalescing, hub/delivery/coalescing.py)."""
from __future__ import annotations

from typing import Any, Awaitable, Callable

from hub.delivery.records import Skip

# (servers, namespace, event, data, rooms, skip_sid, offset) -> how many Socket.IO
# sockets it reached, or None: the event is not delivered on this instance at all
# (not to plain WebSocket and SSE members either; e.g. an update already superseded).
LocalDelivery = Callable[[list, str, str, Any, list[str], Skip, "str | None"], Awaitable["int | None"]]


def sockets_reached(server, namespace: str, rooms: list[str], skip_sid: Skip) -> int:
    """How many sockets of `server` an event to `rooms` reaches. Not counting the
    skipped socket: an event for a user's other sockets (message:sent) mostly reaches
    no one, and is then not even encoded."""
    ns_rooms = server.manager.rooms.get(namespace)
    if not ns_rooms:
        return 0
    reached = 0
    for room in rooms:
        members = ns_rooms.get(room)
        if members:
            reached += len(members) - (sum(sid in members for sid in skip_sid)
                                       if isinstance(skip_sid, list) else skip_sid in members)
    return reached


async def to_sockets(servers: list, namespace: str, event: str, data: Any, rooms: list[str], skip_sid: Skip,
                     offset: str | None) -> int:
    """The plain way: one broadcast per server that has a socket to reach; a durable
    event's offset goes as its last argument."""
    args = (data, offset) if offset else data
    total = 0
    for server in servers:
        reached = sockets_reached(server, namespace, rooms, skip_sid)
        if reached:
            await server.emit(event, args, to=rooms, namespace=namespace, skip_sid=skip_sid)
            total += reached
    return total
