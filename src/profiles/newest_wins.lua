-- Newest-wins upsert of many entities of one feature view, atomically per call.
-- KEYS[i]: entity hash keys (Feast layout).
-- ARGV[1]: timestamp hash field ("_ts:{feature_view}")
-- ARGV[2]: key expiry in milliseconds, 0 for none
-- then per key: n, serialized Timestamp, then n field/value pairs.
-- A stored timestamp newer than the incoming one wins; an equal one is overwritten,
-- so a corrected row that keeps its timestamp still lands.
-- Returns the number of keys written (the rest were stale).
--
-- Per key the common cases cost one HGET and one HSET: a new key (no stored
-- time) and an identical stored time need no decoding, the HSET arguments are
-- passed straight from ARGV with unpack, and EXISTS/PTTL run only for views
-- with a ttl. A few hundred keys per call amortise the call itself.

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
local function decode_ts_any(s)
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

-- The same, with a fast path for the shape nearly every stored time has:
-- seconds as a 5-byte varint (years 1978..3058, read with one string.byte
-- call), then nanos or nothing. Anything else takes the general decoder.
local function decode_ts(s)
  local t, b1, b2, b3, b4, b5, t2 = string.byte(s, 1, 7)
  if t == 8 and b5 and b5 < 128 and b1 >= 128 and b2 >= 128 and b3 >= 128 and b4 >= 128 then
    local sec = (b1 - 128) + (b2 - 128) * 128 + (b3 - 128) * 16384 + (b4 - 128) * 2097152
      + b5 * 268435456
    if t2 == nil then return sec, 0 end
    if t2 == 16 then
      local ns, p = varint(s, 8)
      if ns ~= nil and p == #s + 1 then return sec, ns end
    end
  end
  return decode_ts_any(s)
end

local tsf = ARGV[1]
local ttl = tonumber(ARGV[2])
local a = 3
local written = 0
for k = 1, #KEYS do
  local key = KEYS[k]
  local n = tonumber(ARGV[a])
  local tsb = ARGV[a + 1]
  local last = a + 1 + 2 * n
  local cur = redis.call('HGET', key, tsf)
  local stale = false
  if cur and cur ~= tsb then
    local cs, cn = decode_ts(cur)
    local sec, ns = decode_ts(tsb)
    stale = cs > sec or (cs == sec and cn > ns)
  end
  if not stale then
    local existed = true
    if ttl > 0 and not cur then
      existed = redis.call('EXISTS', key) == 1
    end
    redis.call('HSET', key, tsf, unpack(ARGV, a + 1, last))
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
  a = last + 1
end
return written
