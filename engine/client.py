"""A Socket.IO client (python-socketio's AsyncClient) that tells what a namespace's
CONNECT reply held: python-socketio keeps only its `sid`. The hub's own client
(hubclient) reads the private session id (`pid`) it recovers with from it. The
private name it overrides is listed in engine/internals.py."""
from __future__ import annotations

from typing import Any

import socketio


class ConnectReplyClient(socketio.AsyncClient):
    """`connect_reply(namespace, data)` runs with the data of each CONNECT reply,
    before python-socketio handles it (and runs the namespace's connect handlers)."""

    def connect_reply(self, namespace: str, data: Any) -> None:
        """Override: the data of the CONNECT packet accepting `namespace` (a dict, or None)."""

    async def _handle_connect(self, namespace, data):
        self.connect_reply(namespace or "/", data)
        await super()._handle_connect(namespace, data)
