"""`hub conformance-server`: the hub's own transport stack with the reference
behaviour the official Socket.IO (v5) and Engine.IO (v4) protocol test suites
expect (docs/protocol.md says how to run them against it).

The Socket.IO server is the one `hub serve` builds (`hub.app.build_hub`: same
class, client manager and speed layers), re-configured with the suites' timings;
the Engine.IO server is that server's own Engine.IO class.
"""
from __future__ import annotations

import secrets
import tempfile
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from hub.settings import Settings

SIO = web.AppKey("sio", object)
EIO = web.AppKey("eio", object)

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT = 1.0
# The suites' reader takes one websocket frame per socket read and drops the rest, so
# the events of a connect handler must reach it in a later read than the CONNECT
# reply. A write of its own (hub.protocol.ProtocolServer._connect_written) is not
# enough when the client waits for a CPU. On the shared 2-core test machine (load
# average 9-13), a client reading like the suite lost the event after 83 of 300
# connects with no pause, 4 of 300 with 1 ms, 2 of 2,800 with 20 ms and none of
# 2,500 with 50 ms (docs/protocol.md). The first ping comes 300 ms after the handshake.
CONNECT_PAUSE = 0.05


def _configure(eio) -> None:
    eio.ping_interval = PING_INTERVAL
    eio.ping_interval_grace_period = 0
    eio.ping_timeout = PING_TIMEOUT
    eio.max_http_buffer_size = MAX_PAYLOAD
    eio.cors_allowed_origins = "*"


def reference_handlers(sio, no_auth=None) -> None:
    """Namespaces `/` and `/custom`: emit `auth` with the handshake auth on connect,
    echo `message` as `message-back`, acknowledge `message-with-ack` with its
    arguments, and answer `emit-with-ack` by emitting it back with an ack request,
    then emitting the ack's arguments (newer suite versions test server acks)."""
    for namespace in ("/", "/custom"):
        async def connect(sid, environ, auth, namespace=namespace):
            auth = auth if auth is not None else no_auth
            await sio.emit("auth", (auth,), to=sid, namespace=namespace)  # a tuple: null stays an argument

        async def message(sid, *args, namespace=namespace):
            await sio.emit("message-back", tuple(args), to=sid, namespace=namespace)

        async def message_with_ack(sid, *args):
            return tuple(args)

        async def emit_with_ack(sid, *args, namespace=namespace):
            async def acked(*ack_args):
                await sio.emit("emit-with-ack", ack_args, to=sid, namespace=namespace)

            await sio.emit("emit-with-ack", args, to=sid, namespace=namespace, callback=acked)

        sio.on("connect", connect, namespace=namespace)
        sio.on("message", message, namespace=namespace)
        sio.on("message-with-ack", message_with_ack, namespace=namespace)
        sio.on("emit-with-ack", emit_with_ack, namespace=namespace)


def create_conformance_app(settings: Settings, parser: str = "default") -> web.Application:
    from hub.app import build_hub, msgpack_server

    # Nothing of the hub but its transport is used: its database is never opened.
    tmp = tempfile.TemporaryDirectory(prefix="hub-conformance-")  # nothing is written there
    scratch = Path(tmp.name)
    settings = replace(settings, data_dir=scratch, database_url=f"sqlite+aiosqlite:///{scratch / 'unused.db'}",
                       redis_url=None,
                       jwt_secret=settings.jwt_secret or secrets.token_urlsafe(32))
    hub = build_hub(settings)
    sio = hub.sio if parser == "default" else msgpack_server(hub)
    _configure(sio.eio)
    sio.connect_timeout = CONNECT_TIMEOUT
    sio.connect_pause = CONNECT_PAUSE
    # Without handshake auth the suites expect `{}` from the JSON server and `null`
    # from the msgpack one (the msgpack variant of the Socket.IO suite).
    reference_handlers(sio, no_auth={} if parser == "default" else None)

    eio = type(sio.eio)(async_mode="aiohttp", ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                        max_http_buffer_size=MAX_PAYLOAD, cors_allowed_origins="*")

    @eio.on("message")
    async def echo(sid, data):
        await eio.send(sid, data)

    app = web.Application()
    sio.attach(app)
    eio.attach(app, "engine.io")
    app[SIO], app[EIO] = sio, eio

    async def remove_scratch(app):
        tmp.cleanup()

    app.on_cleanup.append(remove_scratch)
    return app


def run(settings: Settings, args) -> None:
    app = create_conformance_app(settings, parser=args.parser)
    print(f"conformance server ({args.parser} parser) on http://{args.host}:{args.port}: "
          f"Socket.IO at /socket.io/, Engine.IO at /engine.io/", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=1)
