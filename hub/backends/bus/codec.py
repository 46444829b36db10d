"""How bus messages and log entries are encoded: the one place that turns them
into bytes and back, for both backends. Nothing is ever unpickled.

On the bus and in Redis's log, msgpack. A PUBLISH carries one message, a "batch"
header followed by the messages it groups, or a "log" header (written by the
append script, scripts.py) followed by the entries it logged. The memory log keeps
its entries in JSON: it never leaves the process, and orjson encodes them ~3x
faster than msgpack.

Messages are dicts here (the wire shape); typed records can be converted at
these functions once they exist, without touching either backend."""
from __future__ import annotations

import msgpack
import orjson

from storage import jsoncodec


def pack(message: dict) -> bytes:
    """A message or log entry as msgpack; refuses (TypeError) what msgpack cannot encode."""
    return msgpack.packb(message)


def unpack(data: bytes) -> dict:
    return msgpack.unpackb(data)


def roundtrip(message: dict) -> dict:
    """The message as a receiver on Redis would get it: the memory bus passes messages
    through this, so both backends accept the same messages."""
    return msgpack.unpackb(msgpack.packb(message))


def pack_batch(packed: list[bytes]) -> bytes:
    """The payload of one PUBLISH: a lone message as it is; several as a "batch"
    header followed by the messages, which the receivers unpack in order."""
    if len(packed) == 1:
        return packed[0]
    return msgpack.packb({"t": "batch", "n": len(packed)}) + b"".join(packed)


def decode(raw: bytes) -> list[dict]:
    """The messages of one PUBLISH, in order: a message, a batch of them, or a
    log header with its entries."""
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(raw)
    message = next(unpacker)
    kind = message.get("t")
    if kind == "batch":
        return list(unpacker)
    if kind == "log":
        message["e"] = list(unpacker)  # the entries follow the header
    return [message]


def encode_log_entry(entry: dict) -> bytes:
    """A memory log entry, in JSON."""
    try:
        return orjson.dumps(entry)
    except TypeError:  # what orjson does not take (storage/jsoncodec.py)
        return jsoncodec.dumps(entry).encode()


def decode_log_entry(packed: bytes) -> dict:
    return jsoncodec.loads(packed)
