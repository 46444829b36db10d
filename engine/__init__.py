"""The engine: Socket.IO v5 and Engine.IO v4 on aiohttp, on python-socketio and
python-engineio, keeping the protocols the way Node's reference servers do (issue 6,
docs/protocol.md) within the limits of issue 18, and broadcasting fast
(docs/performance.md).

This package is the only code of the project that reaches private names of
python-socketio, python-engineio and aiohttp: its subclasses override the
libraries' private methods (`_handle_connect`, `_websocket_handler`, ...), replace
the Engine.IO server's websocket driver, and take websockets over from aiohttp's
request handler. Every such name is listed in engine/internals.py, checked at the
hub's start (`internals.check()`) and in tests/engine/, against the pinned versions
(`internals.SUPPORTED`). It imports nothing of hub/, handlers/ or storage/: what the
application decides (its contract errors, what a taken-over websocket keeps) comes
in through the hooks below.

The seam, what the application uses:

* `ProtocolServer` (socketio.AsyncServer): the Socket.IO server. Options
  `connect_timeout`, `max_attachments`; hooks `connect_reply(sid, namespace)`
  (CONNECT data), `held_events(sid, namespace)` (events held while a socket
  connects), `engineio_server_class`; `sibling(**overrides)`.
* `ProtocolEngineIOServer` (engineio.AsyncServer): its Engine.IO server; hook
  `too_large_body()` (the 413 answer). `tasks` owns its background tasks.
* `HubManager` (socketio.AsyncManager): the broadcast manager (one encoding per
  broadcast, frames written straight to websockets); hooks `on_handover(request)`
  and `room_watcher` (a `RoomWatcher`: told as named rooms fill and empty; joins
  wait for it).
  `AdminUIManager`: the same for a server with the Admin UI instrumentation.
* `WANTS_ACK`: whether the event being handled asked for an ack.
* `NotepackPacket` / `MSGPACK_PACKET`: the msgpack serializer.
* `ws_frame`, `ready_transport`: frames for the application's own websockets.
* `backlogged(server, eio_sid)`: whether a socket is behind.
* `Tasks`, `cancel_and_wait(*tasks)`: owned background tasks, and stopping tasks by
  cancelling again until each has ended (bounded), for the application's own loops too.
* `internals.check()`: fail at start if a reached private name moved.
"""
from __future__ import annotations

from engine import internals
from engine.admin import ADMIN_NAMESPACE, AdminUIManager
from engine.engineio_server import ProtocolEngineIOServer
from engine.errors import PacketTooLarge
from engine.frames import ready_transport, ws_frame
from engine.manager import HubManager, RoomWatcher, backlogged
from engine.msgpack import MSGPACK_PACKET, NotepackPacket
from engine.socketio_server import WANTS_ACK, ProtocolServer
from engine.tasks import Tasks, cancel_and_wait
from engine.websocket import HandoverHook, Releasable

__all__ = [
    "ADMIN_NAMESPACE", "AdminUIManager", "HandoverHook", "HubManager", "MSGPACK_PACKET", "NotepackPacket",
    "PacketTooLarge", "ProtocolEngineIOServer", "ProtocolServer", "Releasable", "RoomWatcher", "Tasks", "WANTS_ACK",
    "backlogged", "cancel_and_wait", "internals", "ready_transport", "ws_frame",
]
