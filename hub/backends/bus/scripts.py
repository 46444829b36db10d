"""The bus's Lua script (run by redis.py)."""

# KEYS: the bus channel, the hold marker, then per entry its namespace log and its
# "logged" marker. ARGV: retention in ms, the origin, the mode ("direct", "relay" or
# "hold"), the hold in ms, then each entry (msgpack). Appends and publishes
# atomically, so offsets and bus order agree on every instance. An event id already
# logged (the writer and the outbox relay both got to it) is skipped: its offset is
# returned as "" and it is not published again. A direct append while the hold
# marker is there is refused: the reply is "held", and nothing is logged. A "hold"
# append that logged anything sets the marker. The message published is the one
# codec.decode reads: a "log" header followed by the entries as the caller packed them.
# PUBLISH is the template's placeholder: SPUBLISH on a Redis Cluster, whose sharded
# channel is in the slot of the keys (`append_script`).
_APPEND = """
if ARGV[3] == 'direct' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 'held'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local minid = tostring(now - retention) .. '-0'
local offsets, published, entries = {}, {}, {}
local n = (#KEYS - 2) / 2
for i = 1, n do
  local entry = ARGV[i + 4]
  if redis.call('SET', KEYS[2 + n + i], 1, 'NX', 'PX', retention) then
    local offset = redis.call('XADD', KEYS[2 + i], 'MINID', '~', minid, '*', 'e', entry)
    offsets[i] = offset
    published[#published + 1] = offset
    entries[#entries + 1] = entry
  else
    offsets[i] = ''
  end
end
if #entries > 0 and ARGV[3] == 'hold' then
  redis.call('SET', KEYS[2], 1, 'PX', tonumber(ARGV[4]))
end
if #entries > 0 then
  -- A header object followed by the entries exactly as packed by the caller.
  redis.call('__PUBLISH__', KEYS[1], cmsgpack.pack({t = 'log', o = ARGV[2], x = published}) .. table.concat(entries))
end
return offsets
"""


def append_script(publish: str = "PUBLISH") -> str:
    """The append script publishing with `publish` (PUBLISH or SPUBLISH)."""
    assert publish in ("PUBLISH", "SPUBLISH")
    return _APPEND.replace("__PUBLISH__", publish)
