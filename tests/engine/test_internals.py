"""engine/internals.py: every private name of python-socketio, python-engineio and
aiohttp the engine reaches is listed, present in the installed libraries, and
those libraries are the pinned, supported versions. An upgrade that moves a name
fails here (and at the hub's start), not in production."""
from __future__ import annotations

import ast
import importlib
import inspect
import re
import tomllib
from pathlib import Path

import pytest

import engine
from engine import internals

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("socketio", "engineio", "aiohttp")


def test_every_reached_name_is_in_the_installed_libraries():
    assert internals.missing() == []
    internals.check(internals.REACHED)  # raises InternalsChanged otherwise


def test_a_moved_name_fails_loudly_and_by_name():
    moved = internals.Reach("aiohttp.web_protocol.RequestHandler", "_message_tail_moved", "init", "handover",
                            "engine/websocket.py")
    gone = internals.Reach("engineio.async_socket.AsyncSocket", "_websocket_handler_moved", "attr", "core",
                           "engine/socket.py")
    with pytest.raises(internals.InternalsChanged) as failed:
        internals.check([*internals.REACHED, moved, gone])
    message = str(failed.value)
    assert "aiohttp.web_protocol.RequestHandler._message_tail_moved" in message
    assert "engineio.async_socket.AsyncSocket._websocket_handler_moved" in message
    assert "_message_tail (" not in message  # the names still there are not reported


def _lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_the_installed_versions_are_the_supported_pinned_ones():
    assert internals.versions() == internals.SUPPORTED
    for lock in ("requirements.lock", "requirements-test.lock"):
        pins = _lock_pins(ROOT / lock)
        assert {name: pins.get(name) for name in internals.SUPPORTED} == internals.SUPPORTED, lock
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("python-socketio", "python-engineio"):
        assert f"{name}=={internals.SUPPORTED[name]}" in deps


def _engine_modules() -> list[Path]:
    return sorted((ROOT / "engine").glob("*.py"))


def _defined_in_engine() -> set[str]:
    """Every private name the engine defines itself (methods, attributes, slots)."""
    names: set[str] = set()
    for path in _engine_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets):
                names |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_every_private_name_the_engine_reads_is_listed():
    """A private attribute the engine reads (or sets on another object) that it does
    not define itself is a library's: it must be in internals.REACHED."""
    own = _defined_in_engine()
    unlisted = {}
    for path in _engine_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
                unlisted.setdefault(node.attr, path.name)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _private(node.value) \
                    and node.value.isidentifier() and node.value not in own and path.name != "internals.py":
                unlisted.setdefault(node.value, path.name)  # getattr(x, "_name")
    assert {n: p for n, p in unlisted.items() if n not in internals.PRIVATE_NAMES} == {}


def test_every_private_method_the_engine_overrides_is_listed():
    """An engine class's private method that a library base class has is an override
    of a library internal: it must be in internals.REACHED."""
    unlisted = set()
    for path in _engine_modules():
        module = importlib.import_module(f"engine.{path.stem}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not cls.__module__.startswith("engine."):
                continue
            library_bases = [b for b in cls.__mro__ if b.__module__.split(".")[0] in LIBRARIES]
            for name, member in vars(cls).items():
                if not inspect.isfunction(getattr(member, "__func__", member)):
                    continue  # methods only (not the ABC machinery's `_abc_impl`)
                if _private(name) and any(hasattr(b, name) for b in library_bases):
                    if name not in internals.PRIVATE_NAMES:
                        unlisted.add(f"{cls.__qualname__}.{name}")
    assert unlisted == set()


def test_the_seam_exports_what_it_names():
    for name in engine.__all__:
        assert getattr(engine, name) is not None
