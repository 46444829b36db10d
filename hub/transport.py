"""The hub's Socket.IO server class: python-socketio's, with the one thing the
generic adapter needs that its public API does not give (whether a client asked
for an acknowledgement). python-socketio is pinned in pyproject.toml for this."""
from __future__ import annotations

import contextvars

import socketio

from hub.protocol import ProtocolServer

# True while handling an event whose sender asked for an ack. Each event runs in
# its own task (async_handlers), so the value belongs to that one event.
WANTS_ACK: contextvars.ContextVar[bool] = contextvars.ContextVar("wants_ack", default=True)


class HubServer(ProtocolServer):  # hub/protocol.py: the protocol fixes of issue 6
    async def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):
        WANTS_ACK.set(id is not None)
        return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)
