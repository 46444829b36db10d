"""A RESP2 reply parser for the bus's lean reader (redis.py): it reads the
subscribed connection's stream itself, without redis-py's per-message machinery."""
from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError


def resp_parse(buf: bytearray, pos: int):
    """One RESP2 reply from `buf` at `pos`: (value, position after it), or None if
    it is not all there yet. Bulk strings come back as bytes, errors as
    ResponseError values (not raised)."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line, after = buf[pos], buf[pos + 1:end], end + 2
    if kind == 0x24:  # $: bulk string
        n = int(line)
        if n < 0:
            return None, after
        if len(buf) < after + n + 2:
            return None
        return bytes(buf[after:after + n]), after + n + 2
    if kind == 0x2A:  # *: array
        items = []
        for _ in range(int(line)):
            parsed = resp_parse(buf, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    if kind == 0x3A:  # :: integer
        return int(line), after
    if kind == 0x2B:  # +: simple string
        return bytes(line), after
    if kind == 0x2D:  # -: error
        return ResponseError(line.decode("utf-8", "replace")), after
    raise RedisConnectionError(f"unexpected data from Redis: {bytes(buf[pos:pos + 20])!r}")
