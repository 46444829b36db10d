"""What every namespace's connection does besides its operations: refresh its token
in-band (`auth:refresh`) and hear that it expired (`auth:expired`).

Registered in every namespace so that the AsyncAPI document lists them; the
Socket.IO adapter (hub/adapters/socketio.py) runs them itself, since they act on the
connection, not on data (docs/security.md)."""
from __future__ import annotations

from typing import Literal


from handlers.context import Context
from handlers.registry import REGISTRY, operation, server_event
from handlers.schema import Input, Output, Text

REFRESH = "auth:refresh"
EXPIRED = "auth:expired"


class AuthRefresh(Input):
    token: Text(4096, min_length=1)


class AuthRefreshed(Output):
    expires_at: int  # unix seconds: the connection is closed then unless refreshed again


class AuthExpired(Output):
    """The connection's token expired: the server closes the connection next, and the
    client reconnects with a fresh token (recovering what it missed meanwhile)."""

    code: Literal["unauthorized"] = "unauthorized"
    message: str = "token expired"


async def refresh(ctx: Context, req: AuthRefresh) -> AuthRefreshed:
    """Replace the connection's token with a fresh one of the same identity, before it expires."""
    raise NotImplementedError("run by the Socket.IO adapter, which holds the connection")


for _name in list(REGISTRY.namespaces):
    operation(_name, REFRESH)(refresh)
    server_event(_name, EXPIRED)(AuthExpired)
