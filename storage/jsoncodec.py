"""The JSON encoder of the database's JSON columns and of the Socket.IO servers.

orjson encodes several times faster than the standard library, and every event the
hub sends is encoded at least twice (the outbox row, the packet). What orjson does
not take (non-string keys, integers beyond 64 bits) goes to the standard library.
Decoding stays with the standard library: orjson would read an integer beyond 64
bits from a client as a float."""
from __future__ import annotations

import json
from typing import Any

import orjson

loads = json.loads


def dumps(obj: Any, **kwargs: Any) -> str:
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, **kwargs)
