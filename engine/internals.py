"""Every private name of python-socketio, python-engineio and aiohttp the engine
reaches, in one list, and `check()`, which verifies them against the installed
libraries.

The engine's subclasses override and read the libraries' private methods and
attributes (docs/protocol.md says why, fix by fix). Those names are not the
libraries' API: any release may move one. So the supported versions are pinned
(`SUPPORTED`, pyproject.toml, requirements.lock), `check()` runs at the hub's start
(hub/app.py) and in tests/engine/test_internals.py, and an upgrade that moves a
name fails there, loudly and by name, never silently in production.

Nothing outside engine/ may reach a private name of these libraries
(tests/engine/test_boundary.py): add a name here, with the module that needs it,
before using it.

Each `Reach` names one thing: `owner` (a dotted path to a module or class), `name`,
and `kind`:

* "attr": the owner has it (a method or class attribute);
* "init": an instance of the owner has it: a class-level default, or a name its
  `__init__` code (or its bases') or `__slots__` holds;
* "module": `owner.name` is an importable module;
* "code": the owner's code (any function in it, nested ones included) uses it.

`group` says what turns off without it: "broadcast" (engine.manager's fast path,
which then falls back to python-socketio's emit), "handover" (engine.websocket's
LeanWebSocket, which then falls back to python-engineio's driver), "core" (the
protocol fixes: no fallback).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass
from types import CodeType

log = logging.getLogger("hub.engine")

#: The versions the engine is written and tested against (requirements.lock pins
#: them; tests/engine/test_internals.py checks that the installed ones are these).
SUPPORTED = {
    "python-socketio": "5.18.1",
    "python-engineio": "4.15.1",
    "aiohttp": "3.14.5",
}

#: The attribute python-socketio's instrument() keeps on the client manager
#: (engine/admin.py pops from it).
INSTRUMENT_TIMESTAMPS = "_timestamps"


@dataclass(frozen=True)
class Reach:
    owner: str
    name: str
    kind: str  # "attr", "init", "module", "code"
    group: str  # "core", "broadcast", "handover"
    used_by: str

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"


def _reaches(owner: str, kind: str, group: str, used_by: str, *names: str) -> list[Reach]:
    return [Reach(owner, name, kind, group, used_by) for name in names]


EIO_SOCKET = "engineio.async_socket.AsyncSocket"
EIO_BASE_SOCKET = "engineio.base_socket.BaseSocket"
EIO_SERVER = "engineio.async_server.AsyncServer"
EIO_BASE_SERVER = "engineio.base_server.BaseServer"
EIO_DRIVER = "engineio.async_drivers.aiohttp.WebSocket"
SIO_SERVER = "socketio.async_server.AsyncServer"
SIO_BASE_SERVER = "socketio.base_server.BaseServer"

REACHED: list[Reach] = [
    # -- python-engineio: the session (engine/socket.py) --------------------------------
    *_reaches(EIO_SOCKET, "attr", "core", "engine/socket.py", "_upgrade_websocket", "_websocket_handler",
              "handle_get_request", "handle_post_request", "receive", "close", "poll", "send",
              "schedule_ping"),
    *_reaches(EIO_BASE_SOCKET, "init", "core", "engine/socket.py", "queue", "last_ping", "upgrading",
              "upgraded", "connected", "closed", "closing", "server", "sid"),
    *_reaches(EIO_SOCKET, "attr", "broadcast", "engine/manager.py", "_websocket_handler", "send", "poll",
              "check_ping_timeout"),
    # -- python-engineio: the server (engine/engineio_server.py) ------------------------
    *_reaches(EIO_SERVER, "attr", "core", "engine/engineio_server.py", "_handle_connect", "_trigger_event",
              "_make_response", "_service_task", "handle_request", "shutdown", "start_background_task"),
    *_reaches(EIO_BASE_SERVER, "attr", "core", "engine/engineio_server.py", "_get_socket", "_ok",
              "_bad_request", "_unauthorized", "_upgrades", "_method_not_found", "_generate_sid_cookie",
              "create_queue", "generate_id"),
    *_reaches(EIO_BASE_SERVER, "init", "core", "engine/engineio_server.py", "_async", "sockets",
              "start_service_task", "service_task_handle"),
    # its driver table (`_async`): the aiohttp entries the engine reads and replaces
    # ("translate_request", "websocket") are checked by _shapes().
    *_reaches(EIO_DRIVER, "init", "broadcast", "engine/driver.py", "_sock", "handler", "server"),
    *_reaches(EIO_DRIVER, "attr", "broadcast", "engine/driver.py", "send", "wait", "close"),
    # -- python-socketio: the server (engine/socketio_server.py) ------------------------
    *_reaches(SIO_SERVER, "attr", "core", "engine/socketio_server.py", "_handle_connect", "_handle_eio_connect",
              "_handle_eio_message", "_handle_eio_disconnect", "_handle_event", "_handle_ack",
              "_handle_disconnect", "_handle_event_internal", "_trigger_event", "_send_packet", "emit",
              "instrument"),
    *_reaches(SIO_BASE_SERVER, "attr", "core", "engine/socketio_server.py", "_engineio_server_class"),
    *_reaches(SIO_BASE_SERVER, "init", "core", "engine/socketio_server.py", "_binary_packet", "environ",
              "eio", "manager", "packet_class", "not_handled", "namespace_handlers", "handlers",
              "namespaces", "always_connect"),
    *_reaches("socketio.packet.Packet", "attr", "core", "engine/socketio_server.py", "add_attachment"),
    *_reaches("socketio.packet.Packet", "init", "core", "engine/socketio_server.py", "attachment_count"),
    *_reaches("socketio.msgpack_packet.MsgPackPacket", "attr", "core", "engine/msgpack.py", "_to_dict",
              "ext_hook"),
    *_reaches("socketio.async_admin.InstrumentedAsyncServer", "code", "core", "engine/admin.py",
              INSTRUMENT_TIMESTAMPS),
    *_reaches("socketio.async_client.AsyncClient", "attr", "core", "engine/client.py", "_handle_connect"),
    # -- aiohttp: the websocket writer (engine/driver.py, engine/frames.py) -------------
    *_reaches("aiohttp._websocket", "module", "broadcast", "engine/frames.py, engine/internals.py",
              "helpers", "writer"),
    *_reaches("aiohttp._websocket.helpers", "attr", "handover", "engine/frames.py", "websocket_mask"),
    *_reaches("aiohttp._websocket.writer.WebSocketWriter", "attr", "broadcast", "engine/driver.py",
              "send_frame", "_write_websocket_frame"),
    *_reaches("aiohttp._websocket.writer.WebSocketWriter", "init", "broadcast", "engine/driver.py",
              "protocol", "transport", "compress", "_closing"),
    *_reaches("aiohttp.web_ws.WebSocketResponse", "init", "broadcast", "engine/driver.py", "_writer"),
    *_reaches("aiohttp.base_protocol.BaseProtocol", "init", "broadcast", "engine/frames.py", "_paused"),
    # -- aiohttp: the request handler a websocket is taken from (engine/websocket.py) ---
    *_reaches("aiohttp.web_protocol.RequestHandler", "init", "handover", "engine/websocket.py",
              "_message_tail", "_manager", "transport"),
    *_reaches("aiohttp.base_protocol.BaseProtocol", "init", "handover", "engine/websocket.py", "_paused"),
    *_reaches("aiohttp.web_protocol.RequestHandler", "attr", "handover", "engine/websocket.py",
              "connection_lost"),
    *_reaches("aiohttp.web_server.Server", "init", "handover", "engine/websocket.py", "handler_cancellation"),
]

#: The private names reached, by library (for tests/engine/test_boundary.py).
PRIVATE_NAMES = frozenset(r.name for r in REACHED if r.name.startswith("_") and not r.name.startswith("__"))


class InternalsChanged(RuntimeError):
    """An installed library no longer has a private name the engine reaches."""


def resolve(path: str):
    """A module, or a class inside one, by dotted path (ImportError or
    AttributeError if there is none)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _code_names(code: CodeType) -> set[str]:
    names = set(code.co_names) | set(code.co_varnames)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _code_names(const)
    for const in code.co_consts:
        if isinstance(const, str):
            names.add(const)
    return names


def _names_in(obj) -> set[str]:
    """Every name the code of a function, or of each function of a class (or its
    bases, inside the library), uses."""
    names: set[str] = set()
    classes = [c for c in getattr(obj, "__mro__", (obj,)) if c is not object]
    for cls in classes:
        members = vars(cls).values() if isinstance(cls, type) else (cls,)
        for member in members:
            func = getattr(member, "__func__", member)
            code = getattr(func, "__code__", None)
            if code is not None:
                names |= _code_names(code)
    return names


def _init_names(cls) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names |= set(getattr(klass, "__slots__", ()) or ())
        init = vars(klass).get("__init__")
        code = getattr(init, "__code__", None)
        if code is not None:
            names |= _code_names(code)
    return names


def _present(reach: Reach) -> bool:
    try:
        owner = resolve(reach.owner)
    except (ImportError, AttributeError):
        return False
    if reach.kind == "module":
        try:
            importlib.import_module(f"{reach.owner}.{reach.name}")
        except ImportError:
            return False
        return True
    if reach.kind == "attr":
        return hasattr(owner, reach.name)
    if reach.kind == "init":
        return isinstance(owner, type) and (hasattr(owner, reach.name) or reach.name in _init_names(owner))
    if reach.kind == "code":
        return reach.name in _names_in(owner)
    raise ValueError(f"unknown kind {reach.kind!r}")


def missing(group: str | None = None) -> list[str]:
    """The reached names (of one group, or all) the installed libraries lack."""
    return [f"{r} ({r.kind}, for {r.used_by})" for r in REACHED
            if (group is None or r.group == group) and not _present(r)]


def _shapes() -> list[str]:
    """What the names alone do not show: the driver table's entries, and that the
    engine's server classes are the ones the libraries then use."""
    import engineio
    from engineio.async_drivers import aiohttp as eio_aiohttp

    from engine.engineio_server import ProtocolEngineIOServer
    from engine.socketio_server import ProtocolServer

    wrong = []
    eio = engineio.AsyncServer(async_mode="aiohttp")
    table = getattr(eio, "_async", None)
    if not isinstance(table, dict):
        wrong.append("engineio AsyncServer._async is no longer the driver table (a dict)")
    else:
        if table.get("websocket") is not eio_aiohttp.WebSocket:
            wrong.append("engineio AsyncServer._async['websocket'] is no longer the aiohttp WebSocket driver")
        if table.get("translate_request") is not eio_aiohttp.translate_request:
            wrong.append("engineio AsyncServer._async['translate_request'] is no longer aiohttp's")
    sio = ProtocolServer(async_mode="aiohttp")
    if type(sio.eio) is not ProtocolEngineIOServer:
        wrong.append("socketio AsyncServer no longer builds its Engine.IO server from _engineio_server_class()")
    if not isinstance(getattr(sio, "_binary_packet", None), dict):
        wrong.append("socketio AsyncServer._binary_packet is no longer a dict by Engine.IO sid")
    return wrong


def versions() -> dict[str, str]:
    """The installed versions of the libraries in SUPPORTED."""
    return {name: importlib.metadata.version(name) for name in SUPPORTED}


def check(reached: list[Reach] | None = None) -> None:
    """Raise InternalsChanged naming every reached private name (of `reached`, by
    default REACHED) the installed libraries lack, and every shape that changed;
    warn when a library's version is not the supported one (its names being all
    there). Once REACHED passed, the installed libraries do not change: later calls
    return at once."""
    global _checked
    if reached is None and _checked:
        return
    problems = [f"{r} ({r.kind}, for {r.used_by})" for r in (REACHED if reached is None else reached)
                if not _present(r)] + _shapes()
    installed = versions()
    if problems:
        raise InternalsChanged(
            "python-socketio / python-engineio / aiohttp internals the engine relies on have moved "
            f"(installed {installed}, supported {SUPPORTED}): " + "; ".join(problems))
    other = {name: v for name, v in installed.items() if v != SUPPORTED[name]}
    if other:
        log.warning("untested versions of the engine's libraries: %s (supported: %s); every private name "
                    "the engine reaches is there", other, SUPPORTED)
    _checked = _checked or reached is None


_checked = False
