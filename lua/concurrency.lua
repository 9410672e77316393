-- Flux: concurrency slots, at most `max` requests in flight per (limit, client).
-- The runtime's side is flux/src/concurrency.rs; the in-memory backend (flux/src/slots.rs)
-- keeps the same table per process.
--
-- KEYS[1]   the slot set of one (limit, client): "<prefix>:{<client>}#slots:<limit name>", a
--           sorted set of slot ids scored by their lease's expiry (ms of the Redis server clock)
-- ARGV[1]   the operation: "acquire", "renew" or "release"
-- ARGV[2]   the slot id, unique per acquisition ("<instance>-<counter>")
-- ARGV[3]   max: slots the set may hold (acquire only)
-- ARGV[4]   the lease in milliseconds (acquire and renew)
--
-- Returns { ok (1|0), in_flight }:
--   acquire: expired slots are dropped (their holders died), then the slot is added if fewer
--            than max are held: ok = 1 and in_flight counts it; else ok = 0, nothing written.
--   renew:   the slot's expiry moves to now + lease if the slot is still held (ok = 1); a slot
--            that expired meanwhile is not taken again (ok = 0).
--   release: the slot is removed (ok = 1 if it was held).
-- The key's own TTL is kept at the latest expiry it holds, so an abandoned set disappears.

if redis.replicate_commands then
  -- Redis < 5: TIME is non-deterministic; replicate effects, not the script.
  pcall(redis.replicate_commands)
end

local key = KEYS[1]
local op = ARGV[1]
local id = ARGV[2]

if op == 'release' then
  local removed = redis.call('ZREM', key, id)
  return { removed, redis.call('ZCARD', key) }
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[4])
local expiry = now + lease

-- Keeps the set alive as long as its latest lease.
local function extend()
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIRE', key, math.max(1, tonumber(last[2]) - now))
  end
end

if op == 'renew' then
  if not redis.call('ZSCORE', key, id) then
    return { 0, redis.call('ZCARD', key) }
  end
  redis.call('ZADD', key, string.format('%d', expiry), id)
  extend()
  return { 1, redis.call('ZCARD', key) }
end

-- acquire
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now))
local held = redis.call('ZCARD', key)
if held >= tonumber(ARGV[3]) then
  return { 0, held }
end
redis.call('ZADD', key, string.format('%d', expiry), id)
extend()
return { 1, held + 1 }
