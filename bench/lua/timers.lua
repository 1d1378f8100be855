-- Timers: n goroutines (default 100,000) each sleep a pseudo-random duration,
-- uniform in 0..100 ms by whole microseconds, drawn before timing from a
-- Park-Miller generator with a fixed seed, so the Go twin (bench/go/timers)
-- sleeps exactly the same durations. Lateness of one sleep = when it
-- returned - (when it started + its duration).
--
--   weft bench/lua/timers.lua [n] [total|p99]
--
-- prints one metric: "total" (default), the wall time in ns from the first
-- goroutine started to the last one joined, or "p99", the 99th percentile
-- (nearest rank) of the lateness in ns. Both, with p50 and max, go to stderr.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
local sync = require "weft.sync"
local n = B.iters(100000)
local metric = arg[2] or "total"
B.name = "lua_timers_" .. metric
if metric ~= "total" and metric ~= "p99" then
  B.fail("metric must be 'total' or 'p99', not '" .. metric .. "'")
end

local SEED, MAXUS = 42, 100000
local dur, x = {}, SEED
for i = 1, n do
  x = x * 16807 % 2147483647
  dur[i] = (x % (MAXUS + 1)) / 1e6 -- seconds
end

local late = {}
for i = 1, n do late[i] = false end
local wg = sync.waitgroup()
local now, sleep = weft.now, weft.sleep
local function sleeper(i, d)
  local start = now()
  sleep(d)
  late[i] = now() - start - d
  wg:done()
end

local t0 = now()
wg:add(n)
for i = 1, n do weft.go(sleeper, i, dur[i]) end
wg:wait()
local t1 = now()

for i = 1, n do
  if late[i] == false then B.fail("goroutine " .. i .. " did not record its wake-up") end
end
table.sort(late)
local function pct(p) return late[math.max(1, math.ceil(p * n))] * 1e9 end
io.stderr:write(("%s: n %d total %.3f ms lateness p50 %.0f ns p99 %.0f ns max %.0f ns\n")
  :format(B.name, n, (t1 - t0) * 1e3, pct(0.5), pct(0.99), late[n] * 1e9))
B.print(metric == "total" and (t1 - t0) * 1e9 or pct(0.99))
