"""The JSON encoder of the database's JSON columns and of the Socket.IO servers.

orjson encodes several times faster than the standard library, and every event the
hub sends is encoded at least twice (the outbox row, the packet). What orjson does
not take (non-string keys, integers beyond 64 bits) goes to the standard library.
Decoding stays with the standard library: orjson would read an integer beyond 64
bits from a client as a float. It refuses, before parsing, nesting deeper than
MAX_DEPTH: the standard library's parser and everything after it (python-socketio,
pydantic) recurse once per level and would exhaust the stack."""
from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_DEPTH = 64  # no message of the contract comes near it
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def loads(text: str | bytes) -> Any:
    """`json.loads`, raising ValueError for nesting deeper than MAX_DEPTH."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode()
    # Only a text with that many brackets can be that deep: the scan is skipped
    # for everything else (str.count is a single C pass).
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting(text) > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return json.loads(text)


def nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside
    strings do not count)."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def dumps(obj: Any, **kwargs: Any) -> str:
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, **kwargs)
