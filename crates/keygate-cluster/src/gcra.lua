-- GCRA for one key, atomically, on the Redis server's clock (see redis_limiter.rs).
--
-- KEYS[1]  the key's TAT, stored as "<unix seconds>:<nanoseconds>": Lua numbers are doubles,
--          which cannot hold absolute nanoseconds (~1.7e18) exactly; every offset computed
--          below is under 2^53 ns (quota periods are at most 7 days), so it is exact.
-- ARGV[1]  emission interval, ns
-- ARGV[2]  capacity (limit x emission interval), ns
-- ARGV[3]  cost
-- Returns {allowed (0 or 1), used}: how far the TAT was ahead of now before this request, in ns,
-- clamped to [0, capacity] as keygate_core::gcra::decide does; the caller derives the rest of
-- the decision from it. A denied request writes nothing; an allowed one stores the new TAT with
-- an expiry at that TAT, after which the key would read as a full bucket anyway.
local emission = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now_s = tonumber(time[1])
local now_ns = tonumber(time[2]) * 1000

local used = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local sep = string.find(stored, ':', 1, true)
  if sep then
    local s = tonumber(string.sub(stored, 1, sep - 1))
    local ns = tonumber(string.sub(stored, sep + 1))
    if s and ns then
      used = (s - now_s) * 1000000000 + (ns - now_ns)
    end
  end
  if used < 0 then
    used = 0
  elseif used > capacity then
    used = capacity
  end
end

local used_after = used + cost * emission
if used_after > capacity then
  return {0, used}
end
if cost > 0 then
  local tat = now_ns + used_after
  local tat_s = math.floor(tat / 1000000000)
  redis.call('SET', KEYS[1], string.format('%d:%d', now_s + tat_s, tat - tat_s * 1000000000),
    'PX', math.floor(used_after / 1000000) + 1)
end
return {1, used}
