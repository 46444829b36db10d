"""The app factory: wires settings, storage, the shared backends, the bus, Socket.IO and HTTP."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web

from engine import MSGPACK_PACKET, AdminUIManager, HubManager, internals
import handlers.catalog  # noqa: F401  (fills the registry)
from handlers.context import Context
from handlers.local import InstanceLocal
from handlers.registry import REGISTRY
from hub.auth import Authenticator, Tokens
from hub.backends import Backends, build_backends
from hub.backends.bus import Broker
from hub.backends.presence import Presence
from hub.backends.limits import Limits
from hub import sampler
from hub.adapters import admin_ui, asyncapi, gateways, openapi
from hub.connections import Connections
from hub.delivery.fanout import Fanout
from hub.adapters.gateways.members import GOING_AWAY
from hub.adapters.http import (attachments, common, guard, middleware, operations, system, web as web_pages,
                               widget)
from hub.jobs import run_jobs
from hub.metrics import Metrics
from hub.delivery.recovery import Recovery
from hub.delivery.revocation import Revocations
from hub.settings import Settings
from hub.shutdown import Shutdown
from hub.delivery.streams import StreamService
from hub.adapters.socketio_server import HubServer
from hub.adapters.socketio import OperationNamespace
from storage import jsoncodec
from storage.db import Database
from storage.migrate import upgrade

log = logging.getLogger("hub")

# The transport closes a connection whose single packet exceeds this (or twice
# HUB_MAX_PAYLOAD_BYTES, if larger); requests far below it but above
# HUB_MAX_PAYLOAD_BYTES get a `payload_too_large` answer instead. It also bounds a
# binary packet's attachments and what a connection holds unhandled
# (docs/security.md).
TRANSPORT_MAX_PACKET = 1_000_000


@dataclass
class Hub:
    """The services of one running instance."""

    settings: Settings
    db: Database
    limits: Limits  # rate limits, budgets and the login back-off
    broker: Broker
    tokens: Tokens
    auth: Authenticator
    sio: HubServer
    fanout: Fanout
    metrics: Metrics
    connections: Connections
    presence: Presence
    user_presence: Presence
    recovery: Recovery
    revocations: Revocations
    widget_origins: widget.WidgetOrigins
    stopping: Shutdown
    streams: StreamService
    backends: Backends
    local: InstanceLocal = field(default_factory=InstanceLocal)  # what operations keep here

    def context(self, actor, origin: str | None = None) -> Context:
        return Context(actor=actor, db=self.db, settings=self.settings, coalescing=self.backends.coalescing,
                       origin=origin,
                       presence=self.presence, user_presence=self.user_presence, metrics=self.metrics,
                       streams=self.streams, local=self.local)

    async def shutdown(self, app: web.Application) -> None:
        """On SIGTERM (aiohttp has stopped listening by now): close every client's
        transport, not its Socket.IO session, so the official clients reconnect (to
        another instance behind the balancer) and recover what they miss meanwhile.
        What this instance still owes the outbox is flushed in `lifecycle`."""
        sockets = [(server, s) for server in self.fanout.servers for s in list(server.eio.sockets.values())]
        plain = list(self.fanout.members.by_sid.values())  # plain WebSocket and SSE
        self.stopping.step(f"stopped listening; closing {len(sockets) + len(plain)} client connections")
        for server, eio_socket in sockets:
            await eio_socket.close(wait=False, reason=server.eio.reason.TRANSPORT_CLOSE)
        for member in plain:
            member.close(GOING_AWAY, "server restarting: reconnect")
        self.stopping.step(f"waiting up to {self.stopping.requests_timeout:.0f} s for open requests "
                           "and websockets to end")

    async def lifecycle(self, app: web.Application):
        await upgrade(self.db.engine)
        await self.limits.start()
        await self.revocations.start()
        await self.fanout.start()
        await self.recovery.start()
        await self.presence.start()
        await self.user_presence.start()
        mode = "Redis fan-out" if self.settings.redis_url else "in-process fan-out"
        log.info("instance %s ready: %s, %s", self.settings.instance_id,
                 self.db.engine.dialect.name, mode)
        yield
        step = self.stopping.step
        step("stopping recovery (session records)")
        await self.recovery.stop()
        step("stopping the fan-out and the outbox relay")
        await self.fanout.stop()
        await self.revocations.stop()
        step("closing the bus")
        await self.broker.stop()
        step("closing the limits, revoked tokens, coalescing and presence")
        await self.limits.close()
        await self.backends.revoked.close()
        await self.backends.coalescing.close()
        await self.presence.close()
        await self.user_presence.close()
        await self.streams.buffer.close_all()
        await self.backends.close()
        step("closing the database")
        await self.db.close()
        log.info("instance %s stopped", self.settings.instance_id)


def build_hub(settings: Settings) -> Hub:
    internals.check()  # fail at start if an upgrade moved a private name the engine reaches
    settings = settings.with_jwt_secret()
    if settings.sqlite_path:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    backends = build_backends(settings)
    broker = backends.bus
    presence, user_presence = backends.presence, backends.user_presence
    sessions = backends.sessions
    tokens = Tokens(settings.jwt_secret, access_ttl=settings.access_token_ttl,
                    refresh_ttl=settings.refresh_token_ttl, service_ttl=settings.service_token_ttl)
    widget_origins = widget.WidgetOrigins()
    sio = HubServer(
        client_manager=(AdminUIManager if settings.admin_ui else HubManager)(
            websocket_compression=settings.ws_compression),
        async_mode="aiohttp",
        json=jsoncodec,
        cors_allowed_origins=widget.socketio_origins(settings.cors_origins, widget_origins),
        max_http_buffer_size=max(TRANSPORT_MAX_PACKET, 2 * settings.max_payload_bytes),
        # Only the hub's namespaces are served: python-socketio accepts `/` by default,
        # where a connection needs no token (issue 18, item 1).
        namespaces=list(REGISTRY.namespaces) + ([admin_ui.NAMESPACE] if settings.admin_ui else []),
        connect_timeout=settings.connect_timeout,
        logger=False,
        engineio_logger=False,
    )
    metrics = Metrics()
    connections = Connections()
    fanout = Fanout(sio, broker, db=db, instance_id=settings.instance_id, connections=connections,
                    metrics=metrics, published_retention=timedelta(seconds=settings.published_retention))
    streams = StreamService(backends.streams, fanout)
    return Hub(settings=settings, db=db, limits=backends.limits, broker=broker, tokens=tokens,
               auth=Authenticator(tokens, backends.revoked), sio=sio, fanout=fanout, metrics=metrics,
               connections=connections, presence=presence, user_presence=user_presence,
               recovery=Recovery(sessions, broker, window=settings.recovery_window,
                                 max_replay=settings.max_replay, replayed=fanout.replayed),
               revocations=Revocations(db, backends.revoked, fanout),
               widget_origins=widget_origins, stopping=Shutdown(settings.shutdown_timeout), streams=streams,
               backends=backends)


# Clients using socket.io-msgpack-parser connect here (docs/protocol.md): the
# protocol does not negotiate the parser, so each parser has its own server.
MSGPACK_PATH = "socket.io-msgpack"


def msgpack_server(hub: Hub) -> HubServer:
    """The msgpack endpoint's server: hub.sio's class and options, msgpack parser."""
    return hub.sio.sibling(serializer=MSGPACK_PACKET, client_manager=HubManager(
        websocket_compression=hub.settings.ws_compression))


def create_app(settings: Settings) -> web.Application:
    hub = build_hub(settings)
    app = web.Application(
        middlewares=[*middleware.chain(settings), common.errors_middleware,
                     *guard.middlewares(settings, common.client_ip)],
        client_max_size=settings.max_payload_bytes,
        handler_args={"max_field_size": guard.HEADER_FIELD_BYTES, "max_headers": guard.MAX_HEADERS,
                      "max_line_size": guard.REQUEST_LINE_BYTES},
    )
    app[common.HUB] = hub
    hub.sio.attach(app)
    msgpack_sio = msgpack_server(hub)
    msgpack_sio.attach(app, socketio_path=MSGPACK_PATH)
    hub.fanout.add_server(msgpack_sio)
    for server in hub.fanout.servers:
        for spec in REGISTRY.namespaces.values():
            server.register_namespace(
                OperationNamespace(spec, REGISTRY.operations_of(spec.name), hub))
    for module in (system, operations, attachments, asyncapi, openapi, gateways, widget,
                   web_pages):
        app.add_routes(module.routes())
    if settings.admin_ui:
        admin_ui.instrument(hub)
        app.add_routes(admin_ui.routes())
    app.on_response_prepare.append(web_pages.security_headers)
    app.cleanup_ctx.append(hub.lifecycle)
    app.on_shutdown.append(hub.shutdown)
    app.cleanup_ctx.append(lambda app: run_jobs(hub))
    hub.widget_origins.follow(hub.fanout, hub.db)
    app.cleanup_ctx.append(lambda app: hub.widget_origins.run(hub.db))
    app.cleanup_ctx.append(lambda app: sampler.run(hub))
    hub.metrics.collect_at_scrape(lambda: sampler.at_scrape(hub))
    return app
