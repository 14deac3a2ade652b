-- wrk script for scripts/bench: each request carries a key from the file KEYGATE_BENCH_KEYS
-- (one a line), picked at random, so a run spreads over many different keys.
--   KEYGATE_BENCH_SEND=header (default): GET with "Authorization: Bearer <key>" (the upstream,
--     nginx and keygate gateway all get exactly these requests)
--   KEYGATE_BENCH_SEND=verify: POST /api/v1/keys/verify {"key": "<key>"} as the operator key
--     KEYGATE_BENCH_OPERATOR_KEY; KEYGATE_BENCH_RATELIMIT (true/false, default true) is sent
--     as "ratelimit"
--   KEYGATE_BENCH_CHECK=1: each answer is read (which costs wrk more: not for measuring), and
--     wrk prints "refused: N", the answers that were not a 200 or, for verify, not "valid":true
--
-- Requests are made ahead, in init (see KEYGATE_BENCH_PREBUILD below), and request() only picks
-- one. Formatting each with wrk.format at each call (it builds tables and strings in Lua) cost
-- wrk about 4 us of CPU a request, on the cores it shares with the servers: the bare upstream's
-- figure, the ceiling, was then wrk's own (about 115,000 req/s on a 2-core machine, against
-- 160,000-180,000 with the requests made ahead), and every ratio to it looked better than it is.

local send = os.getenv("KEYGATE_BENCH_SEND") or "header"
local operator = os.getenv("KEYGATE_BENCH_OPERATOR_KEY")
local ratelimit = os.getenv("KEYGATE_BENCH_RATELIMIT") or "true"

local created, threads = 0, {}
function setup(thread)
   created = created + 1
   thread:set("id", created)
   threads[created] = thread
end

-- The request for one key, as wrk.format makes it.
local function format(key)
   if send == "verify" then
      local body = '{"key":"' .. key .. '","ratelimit":' .. ratelimit .. '}'
      return wrk.format("POST", "/api/v1/keys/verify",
         { ["Authorization"] = "Bearer " .. operator, ["Content-Type"] = "application/json" }, body)
   end
   return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. key })
end

-- Whether each key's request is made once in init (KEYGATE_BENCH_PREBUILD=1) or joined at each
-- request (0). The default builds them up to 200,000 keys. wrk runs a thread as soon as its own
-- init ends, while the next thread's init is still running and before wrk's clock starts: a
-- million requests took 1.4-2.2 s to build per thread, which the first thread would spend
-- sending requests that count but are not timed. Joining costs about 1 us a request more.
local prebuild = os.getenv("KEYGATE_BENCH_PREBUILD")
local built = false

local keys, n, before, after, len

local function build(key)
   if #key == len then return before .. key .. after end
   return format(key)
end

function init(args)
   local path = os.getenv("KEYGATE_BENCH_KEYS") or error("KEYGATE_BENCH_KEYS is not set")
   if send == "verify" and not operator then error("KEYGATE_BENCH_OPERATOR_KEY is not set") end
   keys, n = {}, 0
   for line in io.lines(path) do
      if line ~= "" then
         n = n + 1
         keys[n] = line
      end
   end
   if n == 0 then error("no key in " .. path) end
   -- A request is the same text around its key: when a key has the length of the first one
   -- (every key of a run, in practice), its request is that text joined around it, one Lua
   -- concatenation instead of a wrk.format.
   len = #keys[1]
   local probe = string.rep("\1", len)
   local text = format(probe)
   local from, to = text:find(probe, 1, true)
   before, after = text:sub(1, from - 1), text:sub(to + 1)
   if prebuild == "1" or (prebuild == nil and n <= 200000) then
      for i = 1, n do keys[i] = build(keys[i]) end
      built = true
   end
   math.randomseed(os.time() * 1000 + id)
end

function request()
   local picked = keys[math.random(n)]
   if built then return picked end
   return build(picked)
end

if os.getenv("KEYGATE_BENCH_CHECK") == "1" then
   refused = 0 -- a global: done() reads it from each thread with thread:get

   function response(status, headers, body)
      if status ~= 200 or (send == "verify" and not body:find('"valid":true', 1, true)) then
         refused = refused + 1
      end
   end

   function done(summary, latency, requests)
      local total = 0
      for _, thread in ipairs(threads) do total = total + thread:get("refused") end
      io.write(string.format("refused: %d\n", total))
   end
end
