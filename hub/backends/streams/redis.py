"""The streams buffer on Redis, shared by every instance on it: Lua scripts make
open, append and close atomic across instances. Keys: `{prefix:streams}:s:{id}`
(hash), `:t:{id}` (text so far), `:d:{dialog}` (its open stream), `:idle` (zset)."""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from common.group_commit import GroupCommit
from hub.backends.redis import OnRedis, tagged
from hub.backends.streams.base import TOMBSTONE_SECONDS, OpenStream, StreamError, Streams, new_stream_id

# KEYS: hash, text, dialog's open stream, idle index. The hash holds d, a, s (seq),
# n (characters: Lua's strlen counts bytes) and, once closed, c (the reason).
_OPEN = """
local current = redis.call('GET', KEYS[3])
if current then return current end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'a', ARGV[3], 's', 0, 'n', 0)
redis.call('SET', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return false
"""

# Several appends in one call (those that arrive together: see RedisStreams.append).
# KEYS: idle index; ARGV: now (ms), key prefix, then per append its stream id,
# assistant id, text, length in characters and the limit.
_APPEND = """
local now, p, out = ARGV[1], ARGV[2], {}
for i = 3, #ARGV, 5 do
  local id, h = ARGV[i], p .. ':s:' .. ARGV[i]
  local closed = redis.call('HGET', h, 'c')
  if redis.call('HGET', h, 'a') ~= ARGV[i + 1] then
    out[#out + 1] = {'missing'}
  elseif closed then
    out[#out + 1] = {'closed:' .. closed}
  else
    local n = tonumber(redis.call('HGET', h, 'n')) + tonumber(ARGV[i + 3])
    if n > tonumber(ARGV[i + 4]) then
      out[#out + 1] = {'too_long'}
    else
      redis.call('HSET', h, 'n', n)
      redis.call('APPEND', p .. ':t:' .. id, ARGV[i + 2])
      redis.call('ZADD', KEYS[1], now, id)
      out[#out + 1] = {'ok', redis.call('HINCRBY', h, 's', 1), redis.call('HGET', h, 'd')}
    end
  end
end
return out
"""

_GET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local closed = redis.call('HGET', KEYS[1], 'c')
if closed then return {'closed:' .. closed} end
local f = redis.call('HMGET', KEYS[1], 'd', 'a', 's')
return {'ok', f[3], f[1], f[2], redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: hash, text, idle index; ARGV: id, reason, tombstone seconds, dialog key prefix.
_CLOSE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'c') == 1 then return false end
local f = redis.call('HMGET', KEYS[1], 'd', 'a', 's')
local text = redis.call('GET', KEYS[2]) or ''
redis.call('HSET', KEYS[1], 'c', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
local dkey = ARGV[4] .. f[1]
if redis.call('GET', dkey) == ARGV[1] then redis.call('DEL', dkey) end
return {f[3], f[1], f[2], text}
"""


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStreams(OnRedis, Streams):
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        """`redis`: the instance's shared client, which the caller closes."""
        self.redis = redis
        # One hash slot for the whole buffer (hub/backends/redis.py): a batch of
        # appends spans many streams in one script.
        self.prefix = tagged(prefix, "streams")
        self._open = self.redis.register_script(_OPEN)
        self._append = self.redis.register_script(_APPEND)
        self._appends = GroupCommit(self._append_batch, limit=500)
        self._get = self.redis.register_script(_GET)
        self._close = self.redis.register_script(_CLOSE)

    def _keys(self, stream_id: str) -> list[str]:
        return [f"{self.prefix}:s:{stream_id}", f"{self.prefix}:t:{stream_id}"]

    @property
    def _idle(self) -> str:
        return f"{self.prefix}:idle"

    async def open(self, dialog_id: int, assistant_id: int) -> str:
        stream_id = new_stream_id()
        busy = await self._open(keys=[*self._keys(stream_id), f"{self.prefix}:d:{dialog_id}", self._idle],
                                args=[stream_id, dialog_id, assistant_id, int(time.time() * 1000)])
        if busy:
            raise StreamError(f"busy:{_s(busy)}")
        return stream_id

    async def append(self, stream_id: str, assistant_id: int, text: str, max_chars: int) -> OpenStream:
        # Appends of many streams at once (a bot answering many visitors) go to Redis
        # together: one script call per batch instead of one per delta.
        out = await self._appends.submit((stream_id, str(assistant_id), text, len(text), max_chars))
        if _s(out[0]) != "ok":
            raise StreamError(_s(out[0]))
        return OpenStream(stream_id, int(out[2]), assistant_id, int(out[1]), text)

    async def _append_batch(self, items: list[tuple]) -> list[list]:
        args: list = [int(time.time() * 1000), self.prefix]
        for item in items:
            args.extend(item)
        return await self._append(keys=[self._idle], args=args)

    async def get(self, stream_id: str) -> OpenStream:
        out = await self._get(keys=self._keys(stream_id))
        if _s(out[0]) != "ok":
            raise StreamError(_s(out[0]))
        return OpenStream(stream_id, int(out[2]), int(out[3]), int(out[1]), _s(out[4]))

    async def close(self, stream_id: str, reason: str) -> OpenStream | None:
        out = await self._close(keys=[*self._keys(stream_id), self._idle],
                                args=[stream_id, reason, TOMBSTONE_SECONDS, f"{self.prefix}:d:"])
        if not out:
            return None
        return OpenStream(stream_id, int(out[1]), int(out[2]), int(out[0]), _s(out[3]))

    async def of_dialog(self, dialog_id: int) -> list[OpenStream]:
        stream_id = await self.redis.get(f"{self.prefix}:d:{dialog_id}")
        if not stream_id:
            return []
        try:
            return [await self.get(_s(stream_id))]
        except StreamError:
            return []  # ended meanwhile

    async def idle(self, seconds: float, limit: int = 100) -> list[str]:
        before = int((time.time() - seconds) * 1000)
        found = await self.redis.zrangebyscore(self._idle, "-inf", before, start=0, num=limit)
        return [_s(m) for m in found]


    async def close_all(self) -> None:
        await self.release_client()
