"""The app factory: wires settings, storage, shared state, the bus, Socket.IO and HTTP."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web

import handlers.catalog  # noqa: F401  (fills the registry)
from handlers.context import Context
from handlers.registry import REGISTRY
from hub.auth import Authenticator, Tokens
from hub.broker import Broker, MemoryBroker, RedisBroker
from hub import asyncapi
from hub.connections import Connections
from hub.fanout import Fanout
from hub.http import attachments, auth, common, operations, publish, system, web as web_pages, widget
from hub.jobs import run_jobs
from hub.manager import HubManager
from hub.metrics import Metrics
from hub.protocol import MSGPACK_PACKET
from hub.presence import MemoryPresence, Presence, RedisPresence
from hub.recovery import MemorySessions, Recovery, RedisSessions
from hub.settings import Settings
from hub.state import MemoryState, RedisState, SharedState
from hub.transport import WANTS_ACK, HubServer
from namespaces.base import OperationNamespace
from storage import jsoncodec
from storage.db import Database
from storage.migrate import upgrade

log = logging.getLogger("hub")

# The transport closes a connection whose single packet exceeds this; requests far
# below it but above HUB_MAX_PAYLOAD_BYTES get a `payload_too_large` answer instead.
TRANSPORT_MAX_PACKET = 1_000_000


@dataclass
class Hub:
    """The services of one running instance."""

    settings: Settings
    db: Database
    state: SharedState
    broker: Broker
    tokens: Tokens
    auth: Authenticator
    sio: HubServer
    fanout: Fanout
    metrics: Metrics
    connections: Connections
    presence: Presence
    recovery: Recovery
    widget_origins: widget.WidgetOrigins

    def context(self, actor, origin: str | None = None) -> Context:
        return Context(actor=actor, db=self.db, settings=self.settings, state=self.state, origin=origin,
                       presence=self.presence)

    async def shutdown(self, app: web.Application) -> None:
        """On SIGTERM (aiohttp has stopped listening by now): close every client's
        transport, not its Socket.IO session, so the official clients reconnect (to
        another instance behind the balancer) and recover what they miss meanwhile.
        What this instance still owes the outbox is flushed in `lifecycle`."""
        for server in self.fanout.servers:
            for eio_socket in list(server.eio.sockets.values()):
                await eio_socket.close(wait=False, reason=server.eio.reason.TRANSPORT_CLOSE)

    async def lifecycle(self, app: web.Application):
        await upgrade(self.db.engine)
        await self.state.start()
        await self.fanout.start()
        await self.recovery.start()
        mode = "Redis fan-out" if self.settings.redis_url else "in-process fan-out"
        log.info("instance %s ready: %s, %s", self.settings.instance_id,
                 self.db.engine.dialect.name, mode)
        yield
        await self.recovery.stop()
        await self.fanout.stop()
        await self.broker.stop()
        await self.state.close()
        await self.presence.close()
        await self.db.close()


def build_hub(settings: Settings) -> Hub:
    settings = settings.with_jwt_secret()
    if settings.sqlite_path:
        settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    # The log keeps events a little longer than a session is kept for recovery, so
    # whatever a recoverable session missed is still there.
    retention = settings.recovery_window + 30
    if settings.redis_url:
        state: SharedState = RedisState(settings.redis_url, settings.redis_prefix)
        broker: Broker = RedisBroker(settings.redis_url, settings.redis_prefix, retention=retention)
        sessions = RedisSessions(settings.redis_url, settings.redis_prefix)
        presence: Presence = RedisPresence(settings.redis_url, settings.redis_prefix,
                                           timeout=settings.presence_timeout, grace=settings.presence_grace)
    else:
        state, broker, sessions = MemoryState(), MemoryBroker(retention=retention), MemorySessions()
        presence = MemoryPresence(timeout=settings.presence_timeout, grace=settings.presence_grace)
    tokens = Tokens(settings.jwt_secret, access_ttl=settings.access_token_ttl,
                    refresh_ttl=settings.refresh_token_ttl, service_ttl=settings.service_token_ttl)
    widget_origins = widget.WidgetOrigins()
    sio = HubServer(
        client_manager=HubManager(websocket_compression=settings.ws_compression),
        async_mode="aiohttp",
        json=jsoncodec,
        cors_allowed_origins=widget.socketio_origins(settings.cors_origins, widget_origins),
        max_http_buffer_size=TRANSPORT_MAX_PACKET,
        logger=False,
        engineio_logger=False,
    )
    metrics = Metrics()
    connections = Connections()
    fanout = Fanout(sio, broker, db=db, instance_id=settings.instance_id, connections=connections,
                    state=state, metrics=metrics, published_retention=timedelta(seconds=settings.published_retention))
    return Hub(settings=settings, db=db, state=state, broker=broker, tokens=tokens,
               auth=Authenticator(tokens, state), sio=sio, fanout=fanout, metrics=metrics,
               connections=connections, presence=presence,
               recovery=Recovery(sessions, broker, window=settings.recovery_window,
                                 max_replay=settings.max_replay),
               widget_origins=widget_origins)


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
        middlewares=[common.errors_middleware],
        client_max_size=settings.max_payload_bytes,
    )
    app[common.HUB] = hub
    hub.sio.attach(app)
    msgpack_sio = msgpack_server(hub)
    msgpack_sio.attach(app, socketio_path=MSGPACK_PATH)
    hub.fanout.servers.append(msgpack_sio)
    for server in hub.fanout.servers:
        for spec in REGISTRY.namespaces.values():
            server.register_namespace(
                OperationNamespace(spec, REGISTRY.operations_of(spec.name), hub, WANTS_ACK))
    for module in (auth, system, operations, attachments, publish, asyncapi, widget, web_pages):
        app.add_routes(module.routes())
    app.cleanup_ctx.append(hub.lifecycle)
    app.on_shutdown.append(hub.shutdown)
    app.cleanup_ctx.append(lambda app: run_jobs(hub))
    app.cleanup_ctx.append(lambda app: hub.widget_origins.run(hub.db))
    return app
