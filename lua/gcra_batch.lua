-- Flux: gcra.lua for several checks in one call: one TIME, one entry into Lua, each check
-- still decided all or nothing, in order (a later check sees an earlier one's writes).
-- The algorithm and its quantities are documented in flux/src/gcra.rs.
--
-- KEYS      the bucket keys of every check, check after check (one Redis, not a cluster)
-- ARGV[1]   now in microseconds, or "" to read the Redis server clock (TIME) once
-- then, per check: its number of keys n, then per key: emission interval T, tolerance
--           tau = burst x T, increment = cost x T (integer microseconds)
--
-- Returns gcra.lua's replies one after the other: per check { allowed (1|0), then per key:
-- remaining, retry_after_us, reset_after_us }.

if redis.replicate_commands then
  pcall(redis.replicate_commands)
end

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local result = {}
local r = 0 -- values written to result
local k = 0 -- keys of the checks before this one
local a = 2 -- ARGV index of this check's key count
local tats = {}
while a <= #ARGV do
  local n = tonumber(ARGV[a])
  local p = a + 1 -- ARGV index of this check's first interval
  local allowed = 1
  for i = 1, n do
    local stored = tonumber(redis.call('GET', KEYS[k + i]))
    if stored == nil or stored < now then
      stored = now
    end
    tats[i] = stored
    local q = p + 3 * (i - 1)
    if stored + tonumber(ARGV[q + 2]) - tonumber(ARGV[q + 1]) > now then
      allowed = 0
    end
  end
  result[r + 1] = allowed
  for i = 1, n do
    local q = p + 3 * (i - 1)
    local interval = tonumber(ARGV[q])
    local tolerance = tonumber(ARGV[q + 1])
    local increment = tonumber(ARGV[q + 2])
    local tat = tats[i]
    local new_tat = tat + increment
    local retry_after = new_tat - tolerance - now
    if retry_after < 0 then
      retry_after = 0
    end
    local o = r + 3 * i - 1
    if allowed == 1 then
      local ttl = new_tat - now
      redis.call('SET', KEYS[k + i], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(ttl / 1000)))
      result[o] = math.floor((tolerance - ttl) / interval)
      result[o + 2] = ttl
    else
      result[o] = math.max(0, math.floor((tolerance - (tat - now)) / interval))
      result[o + 2] = tat - now
    end
    result[o + 1] = retry_after
  end
  r = r + 1 + 3 * n
  k = k + n
  a = p + 3 * n
end
return result
