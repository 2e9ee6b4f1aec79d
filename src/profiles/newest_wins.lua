-- Newest-wins upsert of many entities of one feature view, atomically per call.
-- KEYS[i]: entity hash keys (Feast layout).
-- ARGV[1]: timestamp hash field ("_ts:{feature_view}")
-- ARGV[2]: key expiry in milliseconds, 0 for none
-- then per key: seconds, nanos, serialized Timestamp, n, then n field/value pairs.
-- A stored timestamp newer than the incoming one wins; an equal one is overwritten,
-- so a corrected row that keeps its timestamp still lands.
-- Returns the number of keys written (the rest were stale).

-- Decodes a protobuf varint at position p; returns value and next position.
-- A 10-byte varint is a negative int64 (two's complement), rebuilt from its
-- inverted low 63 bits so small negatives stay exact in Lua's doubles.
local function varint(s, p)
  local start, v, mul, b = p, 0, 1, 0
  repeat
    b = string.byte(s, p)
    if b == nil then return nil, p end
    p = p + 1
    v = v + (b % 128) * mul
    mul = mul * 128
  until b < 128
  if p - start == 10 then
    local inv, m = 0, 1
    for q = start, start + 8 do
      inv = inv + (127 - string.byte(s, q) % 128) * m
      m = m * 128
    end
    v = -inv - 1
  end
  return v, p
end

-- google.protobuf.Timestamp -> seconds, nanos (absent fields are zero).
local function decode_ts(s)
  local sec, ns, p = 0, 0, 1
  while p <= #s do
    local tag = string.byte(s, p)
    p = p + 1
    local v
    v, p = varint(s, p)
    if v == nil then break end
    if tag == 8 then sec = v elseif tag == 16 then ns = v end
  end
  return sec, ns
end

local tsf = ARGV[1]
local ttl = tonumber(ARGV[2])
local a = 3
local written = 0
for _, key in ipairs(KEYS) do
  local sec, ns, tsb, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  local cur = redis.call('HGET', key, tsf)
  local stale = false
  if cur then
    local cs, cn = decode_ts(cur)
    stale = cs > sec or (cs == sec and cn > ns)
  end
  if not stale then
    local existed = cur ~= false or redis.call('EXISTS', key) == 1
    local args = { tsf, tsb }
    for j = 0, n - 1 do
      args[#args + 1] = ARGV[a + 2 * j]
      args[#args + 1] = ARGV[a + 2 * j + 1]
    end
    redis.call('HSET', key, unpack(args))
    if ttl > 0 then
      -- One hash holds every view of an entity: extend an expiry, never shorten
      -- it, and never put one on a key another view keeps without expiry.
      local left = redis.call('PTTL', key)
      if (not existed) or (left >= 0 and left < ttl) then
        redis.call('PEXPIRE', key, ttl)
      end
    end
    written = written + 1
  end
  a = a + 2 * n
end
return written
