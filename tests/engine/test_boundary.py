"""The engine's boundary (issue 19): no module outside engine/ reaches a private name
of python-socketio, python-engineio or aiohttp, and engine/ imports nothing of the
hub, the handlers or the storage."""
from __future__ import annotations

import ast
from pathlib import Path

from engine import internals
from tests.support.paths import ROOT

LIBRARIES = ("socketio", "engineio", "aiohttp")
SKIP = {".venv", "node_modules", ".git", "engine", "build", "dist"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _python_files(skip_engine: bool = True) -> list[Path]:
    files = []
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).parts
        if any(p in SKIP or p.startswith(".") for p in parts[:-1]) and not (
                not skip_engine and parts[0] == "engine"):
            continue
        files.append(path)
    return files


def _library_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted library path it stands for."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES:
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in LIBRARIES:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _resolve(path: str):
    try:
        return internals.resolve(path)
    except (ImportError, AttributeError):
        return None


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = _library_aliases(tree)
    found = []

    def at(node, what):
        found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        # import aiohttp._websocket / from aiohttp._websocket.helpers import ... / from socketio import _x
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in LIBRARIES and any(_private(p) for p in a.name.split(".")):
                    at(node, f"import of the private module {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] in LIBRARIES:
            if any(_private(p) for p in node.module.split(".")):
                at(node, f"import from the private module {node.module}")
            for a in node.names:
                if _private(a.name):
                    at(node, f"import of the private name {node.module}.{a.name}")
        # socketio.AsyncServer._handle_connect, web._something
        elif isinstance(node, ast.Attribute):
            chain = _dotted(node)
            if chain and chain[0] in aliases and any(_private(p) for p in chain[1:]):
                at(node, "private name " + ".".join([aliases[chain[0]], *chain[1:]]))
            # x._async, request.protocol._message_tail: a private name the engine
            # reaches, on anything but the module's own object
            elif _private(node.attr) and node.attr in internals.PRIVATE_NAMES and not (
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                at(node, f"the library private name {node.attr}")
        # class X(socketio.AsyncClient): def _handle_connect(...) / self._binary_packet
        elif isinstance(node, ast.ClassDef):
            bases = []
            for base in node.bases:
                chain = _dotted(base)
                if chain and chain[0] in aliases:
                    obj = _resolve(".".join([aliases[chain[0]], *chain[1:]]))
                    if isinstance(obj, type):
                        bases.append(obj)
            if not bases:
                continue
            for inner in ast.walk(node):
                name = None
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = inner.name
                elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) \
                        and inner.value.id == "self":
                    name = inner.attr
                elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Call) \
                        and getattr(inner.value.func, "id", None) == "super":
                    name = inner.attr
                if name and _private(name) and any(hasattr(b, name) for b in bases):
                    at(inner, f"{node.name} reaches {name} of its library base class")
    return found


def test_nothing_outside_the_engine_reaches_a_private_name_of_the_libraries():
    found = [v for path in _python_files() for v in violations(path)]
    assert found == []


def test_the_scan_finds_what_it_looks_for():
    """The scan on the engine's own code (which may reach them) finds its reaches."""
    found = " ".join(v for path in sorted((ROOT / "engine").glob("*.py")) for v in violations(path))
    for what in ("aiohttp._websocket.helpers", "_message_tail", "_async", "reaches _handle_connect",
                 "reaches _websocket_handler"):
        assert what in found, what


def test_the_engine_imports_nothing_of_the_application():
    imported = []
    for path in sorted((ROOT / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else ["(relative)"]
            for name in names:
                if name.split(".")[0] in ("hub", "handlers", "storage", "namespaces", "hubclient", "tests") \
                        or name == "(relative)" and path.parent.name != "engine":
                    imported.append(f"{path.name}:{node.lineno}: {name}")
    assert imported == []
