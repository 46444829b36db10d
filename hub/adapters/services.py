"""What the adapters need of the running instance: the typed seam between them and
the app factory. `hub.app.Hub` has all of it; an adapter is handed a `Services`
(the Socket.IO namespace a `SocketServices`, the narrower part it uses), never an
untyped object.

The classes named in the annotations are imported for type checkers only: at
runtime their modules import adapters themselves (the fan-out imports the
gateways' members, the widget route imports the HTTP helpers), so importing them
here would make cycles. `resolved()` imports them when asked; the tests resolve
every annotation with it and check a built Hub against it, so a renamed or moved
class fails there."""
from __future__ import annotations

import typing
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from handlers.context import Actor, Context

if TYPE_CHECKING:
    from hub.adapters.http.widget import WidgetOrigins
    from hub.auth import Authenticator, Tokens
    from hub.backends.bus import Broker
    from hub.connections import Connections
    from hub.delivery.fanout import Fanout
    from hub.metrics import Metrics
    from hub.delivery.recovery import Recovery
    from hub.delivery.revocation import Revocations
    from hub.settings import Settings
    from hub.shutdown import Shutdown
    from hub.backends import Backends
    from hub.backends.limits import Limits
    from hub.adapters.socketio_server import HubServer
    from storage.db import Database


@runtime_checkable
class SocketServices(Protocol):
    """What the Socket.IO adapter (hub/adapters/socketio.py) uses."""

    settings: Settings
    limits: Limits
    auth: Authenticator
    fanout: Fanout
    metrics: Metrics
    connections: Connections
    recovery: Recovery

    def context(self, actor: Actor, origin: str | None = None) -> Context: ...


@runtime_checkable
class Services(SocketServices, Protocol):
    """What the HTTP routes and the plain WebSocket and SSE gateways use besides
    (`request.app[HUB]`, hub/adapters/http/common.py)."""

    db: Database
    broker: Broker
    tokens: Tokens
    sio: HubServer
    revocations: Revocations
    widget_origins: WidgetOrigins
    stopping: Shutdown
    backends: Backends  # /ready pings their store


def resolved(protocol: type = Services) -> dict[str, typing.Any]:
    """The protocol's annotations as classes (importing their modules now)."""
    from hub.adapters.http.widget import WidgetOrigins
    from hub.auth import Authenticator, Tokens
    from hub.backends.bus import Broker
    from hub.connections import Connections
    from hub.delivery.fanout import Fanout
    from hub.metrics import Metrics
    from hub.delivery.recovery import Recovery
    from hub.delivery.revocation import Revocations
    from hub.settings import Settings
    from hub.shutdown import Shutdown
    from hub.backends import Backends
    from hub.backends.limits import Limits
    from hub.adapters.socketio_server import HubServer
    from storage.db import Database

    return typing.get_type_hints(protocol, localns=locals())
