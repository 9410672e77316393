-- Flux: fleet heartbeat. Each Redis-backed limiter (one per service instance) calls this every
-- second, so that every instance knows how many live instances share its limits; the `local`
-- failure policy divides each limit by that number during an outage (flux/src/fleet.rs).
--
-- KEYS[1]   the fleet's sorted set: "<prefix>:fleet", members = instance ids, scored by the
--           expiry of their last heartbeat, in milliseconds of the Redis server clock (TIME),
--           so that app servers' clocks never matter
-- ARGV[1]   this instance's id
-- ARGV[2]   time to live of a heartbeat, in milliseconds
--
-- Returns { live }: the number of live instances, this one included. Expired members are removed; the
-- set itself expires with its freshest member, so a fleet that stopped leaves nothing behind.

if redis.replicate_commands then
  -- Redis < 5: TIME is non-deterministic; replicate effects, not the script.
  pcall(redis.replicate_commands)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return { redis.call('ZCARD', KEYS[1]) }
