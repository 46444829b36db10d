"""The engine's own errors, and the one log line of an oversized message. The hub
maps them to its contract errors (hub/adapters/socketio_server.py); nothing here
knows the contract."""
from __future__ import annotations

import logging

from engineio import exceptions as eio_exceptions

# The logger names of the modules this came from (hub/protocol.py), kept so that log
# configurations and what operators grep for stay the same.
log = logging.getLogger("hub.protocol")


class MalformedPayload(eio_exceptions.EngineIOError):
    """A long-polling POST whose body is not an Engine.IO payload."""


class DuplicatePoll(eio_exceptions.EngineIOError):
    """A second long-polling GET while one is still waiting."""


class DuplicatePost(eio_exceptions.EngineIOError):
    """A long-polling POST while another one's body is still being read."""


class BodyLost(eio_exceptions.EngineIOError):
    """A long-polling POST whose body stopped before its Content-Length (the client
    went away, or a body timeout closed the connection)."""


def log_oversized(sid: str, limit: int) -> None:
    """The one line a connection closed for a message over the packet limit leaves."""
    log.warning("%s: a websocket message over %d bytes, closing the connection", sid, limit)


class PacketTooLarge(ValueError):
    """A Socket.IO packet over the server's limits (its attachments, or its bytes)."""
