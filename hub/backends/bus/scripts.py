"""The bus's Lua script (run by redis.py)."""

# KEYS: the hold marker, then per entry its namespace log and its "logged" marker,
# then the channels the entries go to. ARGV: retention in ms, the origin, the mode
# ("direct", "relay" or "hold"), the hold in ms, the number of entries n, then each
# entry (msgpack), then each entry's route (a number), then the routes: the
# space-separated indexes (into the channels) of each. Appends and publishes
# atomically, so offsets and bus order agree on every instance. An event id already
# logged (the writer and the outbox relay both got to it) is skipped: its offset is
# returned as "" and it is not published again. A direct append while the hold
# marker is there is refused: the reply is "held", and nothing is logged. A "hold"
# append that logged anything sets the marker.
# Each run of consecutive entries with the same route goes out as one message to
# each of its channels, runs in offset order: an instance gets its entries in offset
# order. A message is what codec.decode reads: a "log" header followed by the
# entries as the caller packed them.
# PUBLISH is the template's placeholder: SPUBLISH on a Redis Cluster, whose sharded
# channels are in the slot of the keys (`append_script`).
_APPEND = """
if ARGV[3] == 'direct' and redis.call('EXISTS', KEYS[1]) == 1 then
  return 'held'
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local minid = tostring(now - retention) .. '-0'
local n = tonumber(ARGV[5])
local offsets, logged = {}, 0
for i = 1, n do
  if redis.call('SET', KEYS[1 + n + i], 1, 'NX', 'PX', retention) then
    offsets[i] = redis.call('XADD', KEYS[1 + i], 'MINID', '~', minid, '*', 'e', ARGV[5 + i])
    logged = logged + 1
  else
    offsets[i] = ''
  end
end
if logged > 0 and ARGV[3] == 'hold' then
  redis.call('SET', KEYS[1], 1, 'PX', tonumber(ARGV[4]))
end
local function send(route, xs, es)
  if #es == 0 then return end
  local payload = cmsgpack.pack({t = 'log', o = ARGV[2], x = xs}) .. table.concat(es)
  for c in string.gmatch(ARGV[5 + 2 * n + route], '%d+') do
    redis.call('__PUBLISH__', KEYS[1 + 2 * n + tonumber(c)], payload)
  end
end
local route, xs, es = nil, {}, {}
for i = 1, n do
  if offsets[i] ~= '' then
    local r = tonumber(ARGV[5 + n + i])
    if r ~= route then
      if route then send(route, xs, es) end
      route, xs, es = r, {}, {}
    end
    xs[#xs + 1] = offsets[i]
    es[#es + 1] = ARGV[5 + i]
  end
end
if route then send(route, xs, es) end
return offsets
"""


def append_script(publish: str = "PUBLISH") -> str:
    """The append script publishing with `publish` (PUBLISH or SPUBLISH)."""
    assert publish in ("PUBLISH", "SPUBLISH")
    return _APPEND.replace("__PUBLISH__", publish)
