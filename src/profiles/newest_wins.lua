#!lua flags=allow-cross-slot-keys
-- Newest-wins upsert of many entities of one feature view, atomically per call.
-- KEYS[i]: entity hash keys (Feast layout). On a Redis Cluster a call may
-- instead declare no keys and pass them first: ARGV[1] = their count, then
-- the keys, all served by the node the call runs on but of many slots (what
-- the flag above allows; Redis refuses a key of another node, and the caller
-- then resends per slot with declared keys). The arguments below follow them.
-- ACL key permissions still apply: Redis checks them on every command the
-- script runs, declared keys or not.
-- ARGV[1]: timestamp hash field ("_ts:{feature_view}")
-- ARGV[2]: generation hash field ("_gen:{feature_view}")
-- ARGV[3]: the writer's shape generation (0 until the view is first reshaped)
-- ARGV[4]: "1" when the view has a ttl, else "0"
-- ARGV[5]: the view's erasure tombstone field ("_erased:{feature_view}")
-- ARGV[6]: m, then m hash fields: the view's value fields (only when some key
--          of this call is a delete; else m = 0)
-- then per key: n, [expiry deadline in ms since the epoch, only with a ttl],
-- serialized Timestamp, then n field/value pairs; n = -1 is a delete (a row
-- whose soft-delete flag is set): the view's values go, its time stays.
--
-- Erasure tombstones (`_erased` for every view of the entity, `_erased:{fv}`
-- for one view; serialized Timestamps) beat any row stamped at or before
-- them, whatever its generation: an erased value never comes back from a
-- replay, a full resync or a reshape.
--
-- Which value wins: a value of a newer shape generation always beats one of an
-- older generation (a reshaped view replaces the old shape's values whatever
-- their times, and a run of the old shape still writing can never overwrite
-- the new one); within one generation a stored timestamp newer than the
-- incoming one wins and an equal one is overwritten, so a corrected row that
-- keeps its timestamp still lands. Returns the number of keys written (the
-- rest were stale).
--
-- Key expiry: one hash holds every view of an entity, so a view's ttl may only
-- ever *extend* the key's expiry (to this row's deadline), never shorten it,
-- and never put one on a key that a view without ttl keeps; a write by a view
-- without ttl makes the key persistent. Expiry is storage clean-up only: reads
-- hide a view's values past its own ttl.
--
-- Per key the common cases cost one HMGET and one HSET: a new key (no stored
-- time) and an identical stored time need no decoding, the HSET arguments are
-- passed straight from ARGV with unpack. A view without ttl adds one PERSIST
-- when it first writes a key; a view with a ttl one PEXPIRETIME (Redis >= 7.0)
-- and, when the deadline grows, one PEXPIREAT. A few hundred keys per call
-- amortise the call itself.

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

-- Whether serialized Timestamp a is later than b.
local function later(a, b)
  local as, an = decode_ts(a)
  local bs, bn = decode_ts(b)
  return as > bs or (as == bs and an > bn)
end

local keys, o = KEYS, 0
if #KEYS == 0 then
  o = tonumber(ARGV[1]) + 1
  keys = {unpack(ARGV, 2, o)}
end
local tsf, genf, gens = ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
local gen = tonumber(gens)
local ttl = ARGV[o + 4] == '1'
local erasedf = ARGV[o + 5]
local m = tonumber(ARGV[o + 6])
local a = o + 7 + m
local written = 0
for k = 1, #keys do
  local key = keys[k]
  local n = tonumber(ARGV[a])
  local d = a + 1
  local deadline
  if ttl then
    deadline = tonumber(ARGV[d])
    d = d + 1
  end
  local tsb = ARGV[d]
  local delete = n < 0
  local last = d + 2 * math.max(n, 0)
  local st = redis.call('HMGET', key, tsf, genf, '_erased', erasedf)
  local cur, cg = st[1], tonumber(st[2]) or 0
  local stale = cg > gen
  if cg == gen and cur and cur ~= tsb then
    stale = later(cur, tsb)
  end
  if (st[3] and not later(tsb, st[3])) or (st[4] and not later(tsb, st[4])) then
    stale = true
  end
  if not stale then
    local expires
    if ttl then expires = redis.call('PEXPIRETIME', key) end
    if delete and m > 0 then
      redis.call('HDEL', key, unpack(ARGV, o + 7, o + 6 + m))
    end
    if gen > 0 then
      redis.call('HSET', key, genf, gens, tsf, unpack(ARGV, d, last))
    else
      redis.call('HSET', key, tsf, unpack(ARGV, d, last))
    end
    if ttl then
      -- -2: the key is new; -1: a view without ttl keeps it; else its deadline.
      if expires == -2 or (expires >= 0 and deadline > expires) then
        redis.call('PEXPIREAT', key, deadline)
      end
    elseif (not cur) or cg ~= gen then
      -- Once this view has written a key the key is persistent (no view with a
      -- ttl adds expiry to a persistent key), so only a first write checks.
      redis.call('PERSIST', key)
    end
    written = written + 1
  end
  a = last + 1
end
return written
