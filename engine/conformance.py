"""The reference behaviour the official Socket.IO (v5) and Engine.IO (v4) protocol
test suites expect, served by an engine server: `conformance_app(sio)`. The hub's
command `hub conformance-server` (hub/adapters/conformance.py) passes the Socket.IO
server `hub serve` builds; docs/protocol.md says how to run the suites against it.
The Engine.IO server of the app is that server's own Engine.IO class.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.socketio_server import ProtocolServer

SIO = web.AppKey("sio", ProtocolServer)
EIO = web.AppKey("eio", object)

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT = 1.0
# The suites' reader takes one websocket frame per socket read and drops the rest, so
# the events of a connect handler must reach it in a later read than the CONNECT
# reply. A write of its own (ProtocolServer._connect_written) is not enough when the
# client waits for a CPU: on the shared 2-core test machine a client reading like the
# suite still lost the event now and then with a pause of 20 ms, never with 50 ms
# (docs/protocol.md). The first ping comes 300 ms after the handshake.
CONNECT_PAUSE = 0.05


def configure(eio) -> None:
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


def conformance_app(sio: ProtocolServer, no_auth=None,
                    on_cleanup: Callable[[web.Application], Awaitable[None]] | None = None) -> web.Application:
    """`sio` re-configured with the suites' timings and the reference handlers at
    /socket.io/, and an Engine.IO echo server of its Engine.IO class at /engine.io/.
    `no_auth`: the `auth` the connect handlers emit when the handshake has none."""
    configure(sio.eio)
    sio.connect_timeout = CONNECT_TIMEOUT
    sio.connect_pause = CONNECT_PAUSE
    reference_handlers(sio, no_auth=no_auth)

    eio = type(sio.eio)(async_mode="aiohttp", ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT,
                        max_http_buffer_size=MAX_PAYLOAD, cors_allowed_origins="*")

    @eio.on("message")
    async def echo(sid, data):
        await eio.send(sid, data)

    app = web.Application()
    sio.attach(app)
    eio.attach(app, "engine.io")
    app[SIO], app[EIO] = sio, eio
    if on_cleanup is not None:
        app.on_cleanup.append(on_cleanup)
    return app


def run(app: web.Application, host: str, port: int, parser: str) -> None:
    print(f"conformance server ({parser} parser) on http://{host}:{port}: "
          f"Socket.IO at /socket.io/, Engine.IO at /engine.io/", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None, shutdown_timeout=1)
