"""Websocket frames written by hand (RFC 6455): the server's frames of a broadcast,
the handshake's accept value, and the transport of an aiohttp websocket that a
ready frame may be written to."""
from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable

from aiohttp.web import WebSocketResponse

try:  # aiohttp's C unmasking (its pure-Python one otherwise); engine/internals.py lists it
    from aiohttp._websocket.helpers import websocket_mask
except ImportError:  # pragma: no cover - aiohttp moved it
    def websocket_mask(mask: bytes, data: bytearray) -> None:
        n = len(data)
        data[:] = (int.from_bytes(data, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")


def ws_frame(payload: bytes | str) -> bytes:
    """One unmasked, uncompressed server websocket frame (RFC 6455 §5.2)."""
    if isinstance(payload, str):
        data, opcode = payload.encode("utf-8"), 0x1
    else:
        data, opcode = bytes(payload), 0x2
    n = len(data)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + data


def ready_transport(ws: WebSocketResponse) -> Callable[[], asyncio.Transport | None]:
    """For a prepared aiohttp websocket (the plain gateways' sockets,
    hub/adapters/gateways/members.py): a function answering the transport a ready, uncompressed
    frame may be written to right now, or None (closing or paused). Always None when
    the connection is compressed or aiohttp's internals changed (engine/internals.py).
    The writer, its protocol and transport are fixed once the websocket is prepared,
    so they are looked up once, not on every broadcast."""
    writer = getattr(ws, "_writer", None)
    protocol = getattr(writer, "protocol", None)
    transport = getattr(writer, "transport", None)
    if (transport is None or getattr(writer, "compress", True) or not hasattr(writer, "_closing")
            or not hasattr(protocol, "_paused")):
        return lambda: None

    def ready() -> asyncio.Transport | None:
        if writer._closing or protocol._paused or transport.is_closing():
            return None
        return transport

    return ready

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_accept(request) -> bytes | None:
    """The Sec-WebSocket-Accept value for a valid RFC 6455 upgrade request without
    extensions we would take, or None (aiohttp then answers it, as before)."""
    h = request.headers
    if request.method != "GET" or h.get("Upgrade", "").lower() != "websocket" or \
            "upgrade" not in [t.strip() for t in h.get("Connection", "").lower().split(",")] or \
            h.get("Sec-WebSocket-Version") != "13":
        return None
    key = h.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except ValueError:
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest())
