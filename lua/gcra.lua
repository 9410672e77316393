-- Flux: token bucket stored as GCRA, one or more checks per call, each of one or more limits
-- decided all or nothing.
-- The algorithm and its quantities are documented in flux/src/gcra.rs, which computes the
-- same integers in Rust for the in-memory backend.
--
-- A call decides a batch of checks: the checks that queued up while the connection was busy
-- share one entry into Lua and one TIME (most calls carry a single check). Checks are decided
-- in order, so a later check sees an earlier one's writes, exactly as separate calls would.
--
-- KEYS      the bucket keys of every check, check after check. A check's keys are those of
--           one client: "<prefix>:{<client>}:<limit name>" (one hash tag per check; a batch on
--           a cluster holds checks of one slot only)
-- ARGV[1]   now in microseconds, or "" to read the Redis server clock (TIME). Production
--           always sends ""; an explicit value is for tests that drive time.
-- then, per check: its number of keys n, or "n:want" for a token lease (take up to `want`
--           checks at once, as many as every bucket holds; flux/src/lease.rs), then per key:
--           emission interval T, tolerance tau = burst x T, increment = cost x T (integer
--           microseconds)
--
-- Returns, check after check: { taken, then per key: remaining, retry_after_us,
-- reset_after_us }; taken is 1 (admitted) or 0 (denied) for a plain check, and the checks
-- taken, 0 to want, for a lease: each key's TAT then moves by taken x increment.
-- On admission every key of the check is set to its new TAT with `SET key tat PX ttl`, ttl =
-- the time until its bucket is full again (so idle clients cost no memory); on denial nothing
-- is written.
--
-- A check whose read or write Redis refuses (WRONGTYPE: its key holds another type; OOM)
-- fails alone: its `taken` is Redis' error text (a string, the only one a reply holds) and its
-- per-key values are 0; a read that fails writes nothing, a write that fails leaves the
-- check's earlier keys written. The other checks are decided as if each were its own call.

-- Needs Redis 5 or later, which replicates a script's effects (its writes), not the script:
-- TIME makes it non-deterministic.

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Locals, not table lookups, in the loops: every instruction counts once per check.
local floor, max = math.floor, math.max
local format = string.format
local pcall, type = redis.pcall, type
local result = {}
local r = 0 -- values written to result so far
local k = 0 -- keys of the checks before this one
local a = 2 -- ARGV index of this check's key count
local argc = #ARGV
local tats, tols, incs = {}, {}, {}
while a <= argc do
  local n = tonumber(ARGV[a])
  local want = 1
  if not n then
    local count, lease = string.match(ARGV[a], '^(%d+):(%d+)$')
    n, want = tonumber(count), tonumber(lease)
  end
  local p = a + 1 -- ARGV index of this check's first interval
  local allowed = want -- checks every bucket holds, at most want: 0 is a denial
  local failed -- Redis' error to this check's read or write
  for i = 1, n do
    local got = pcall('GET', KEYS[k + i])
    local stored = tonumber(got)
    if not stored then
      if got and type(got) == 'table' then -- not a missing key (false): an error
        failed = got.err or 'ERR'
        break
      end
      stored = now -- no bucket: full
    elseif stored < now then
      stored = now
    end
    local q = p + 3 * i - 3
    local tolerance = tonumber(ARGV[q + 1])
    local increment = tonumber(ARGV[q + 2])
    tats[i], tols[i], incs[i] = stored, tolerance, increment
    if want == 1 then
      if stored + increment - tolerance > now then
        allowed = 0
      end
    else
      -- A lease: as many checks as fit, `stored + fits x increment - tolerance <= now`.
      local fits = floor((now + tolerance - stored) / increment)
      if fits < allowed then
        allowed = max(0, fits)
      end
    end
  end
  result[r + 1] = allowed
  for i = 1, failed and 0 or n do
    local interval = tonumber(ARGV[p + 3 * i - 3])
    local tat, tolerance = tats[i], tols[i]
    local new_tat = tat + incs[i] * max(1, allowed)
    local retry_after = new_tat - tolerance - now
    if retry_after < 0 then
      retry_after = 0
    end
    local o = r + 3 * i - 1
    if allowed > 0 then
      local ttl = new_tat - now
      -- format keeps all digits (a bare number would become "1.7e+15"); PX rounds up.
      local set = pcall('SET', KEYS[k + i], format('%d', new_tat), 'PX', max(1, floor((ttl + 999) / 1000)))
      if set.err then
        failed = set.err
        break
      end
      result[o] = floor((tolerance - ttl) / interval)
      result[o + 2] = ttl
    else
      result[o] = max(0, floor((tolerance - (tat - now)) / interval))
      result[o + 2] = tat - now
    end
    result[o + 1] = retry_after
  end
  if failed then
    result[r + 1] = failed
    for o = r + 2, r + 1 + 3 * n do
      result[o] = 0
    end
  end
  r = r + 1 + 3 * n
  k = k + n
  a = p + 3 * n
end
return result
