"""`hub conformance-server`: the hub's own transport stack (the Socket.IO server
`hub serve` builds: same class, client manager and speed layers) serving the
reference behaviour of the official protocol test suites (engine/conformance.py;
docs/protocol.md says how to run them against it).
"""
from __future__ import annotations

import secrets
import tempfile
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from engine.conformance import EIO, SIO, conformance_app
from engine.conformance import run as run_app
from hub.settings import Settings

__all__ = ["EIO", "SIO", "create_conformance_app", "run"]


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

    async def remove_scratch(app):
        tmp.cleanup()

    # Without handshake auth the suites expect `{}` from the JSON server and `null`
    # from the msgpack one (the msgpack variant of the Socket.IO suite).
    return conformance_app(sio, no_auth={} if parser == "default" else None, on_cleanup=remove_scratch)


def run(settings: Settings, args) -> None:
    run_app(create_conformance_app(settings, parser=args.parser), args.host, args.port, args.parser)
