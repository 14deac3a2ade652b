-- wrk script for scripts/bench: each request carries a key from the file KEYGATE_BENCH_KEYS
-- (one a line), picked at random, so a run spreads over many different keys.
--   KEYGATE_BENCH_SEND=header (default): GET with "Authorization: Bearer <key>" (the upstream,
--     nginx and keygate gateway all get exactly these requests)
--   KEYGATE_BENCH_SEND=verify: POST /api/v1/keys/verify {"key": "<key>"} as the operator key
--     KEYGATE_BENCH_OPERATOR_KEY; KEYGATE_BENCH_RATELIMIT (true/false, default true) is sent
--     as "ratelimit"

local send = os.getenv("KEYGATE_BENCH_SEND") or "header"
local operator = os.getenv("KEYGATE_BENCH_OPERATOR_KEY")
local ratelimit = os.getenv("KEYGATE_BENCH_RATELIMIT") or "true"

local created = 0
function setup(thread)
   created = created + 1
   thread:set("id", created)
end

local keys, n

function init(args)
   local path = os.getenv("KEYGATE_BENCH_KEYS") or error("KEYGATE_BENCH_KEYS is not set")
   keys, n = {}, 0
   for line in io.lines(path) do
      if line ~= "" then
         n = n + 1
         keys[n] = line
      end
   end
   if n == 0 then error("no key in " .. path) end
   math.randomseed(os.time() * 1000 + id)
end

function request()
   local key = keys[math.random(n)]
   if send == "verify" then
      local body = '{"key":"' .. key .. '","ratelimit":' .. ratelimit .. '}'
      return wrk.format("POST", "/api/v1/keys/verify",
         { ["Authorization"] = "Bearer " .. operator, ["Content-Type"] = "application/json" }, body)
   end
   return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. key })
end
