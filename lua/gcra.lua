-- Flux: token bucket stored as GCRA, several limits decided all or nothing.
-- The algorithm and its quantities are documented in flux/src/gcra.rs, which computes the
-- same integers in Rust for the in-memory backend.
--
-- KEYS[i]   bucket key of limit i: "<prefix>:{<client>}:<limit name>" (one hash tag per call)
-- ARGV[1]   now in microseconds, or "" to read the Redis server clock (TIME). Production
--           always sends ""; an explicit value is for tests that drive time.
-- ARGV[3i-1], ARGV[3i], ARGV[3i+1]   for limit i: emission interval T, tolerance
--           tau = burst x T, increment = cost x T (integer microseconds)
--
-- Returns { allowed (1|0), then for each limit i: remaining, retry_after_us, reset_after_us }.
-- On admission every key is set to its new TAT with `SET key tat PX ttl`, ttl = the time until
-- its bucket is full again (so idle clients cost no memory); on denial nothing is written.

if redis.replicate_commands then
  -- Redis < 5: TIME is non-deterministic; replicate effects, not the script.
  -- (Redis 7 always does and keeps this call as a no-op.)
  pcall(redis.replicate_commands)
end

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local n = #KEYS
local tats = {}
local allowed = 1
for i = 1, n do
  local stored = tonumber(redis.call('GET', KEYS[i]))
  if stored == nil or stored < now then
    stored = now
  end
  tats[i] = stored
  local tolerance = tonumber(ARGV[3 * i])
  local increment = tonumber(ARGV[3 * i + 1])
  if stored + increment - tolerance > now then
    allowed = 0
  end
end

local result = { allowed }
for i = 1, n do
  local interval = tonumber(ARGV[3 * i - 1])
  local tolerance = tonumber(ARGV[3 * i])
  local increment = tonumber(ARGV[3 * i + 1])
  local tat = tats[i]
  local new_tat = tat + increment
  local retry_after = new_tat - tolerance - now
  if retry_after < 0 then
    retry_after = 0
  end
  if allowed == 1 then
    local ttl = new_tat - now
    -- string.format keeps all digits (a bare number would become "1.7e+15").
    redis.call('SET', KEYS[i], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(ttl / 1000)))
    result[3 * i - 1] = math.floor((tolerance - ttl) / interval)
    result[3 * i + 1] = ttl
  else
    result[3 * i - 1] = math.max(0, math.floor((tolerance - (tat - now)) / interval))
    result[3 * i + 1] = tat - now
  end
  result[3 * i] = retry_after
end
return result
