-- Lua twin of bench/c/spawn.c: start goroutines in batches of 1000, each
-- sends its argument on a channel of 1000 and exits; ns per goroutine.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_spawn"
local n = B.iters(300000)
local BATCH = 1000
local done = weft.chan(BATCH)
local function child(i) done:send(i) end
local sum, count = 0, 0
local t0 = weft.now()
for base = 0, n - 1, BATCH do
  local k = math.min(BATCH, n - base)
  for j = 1, k do weft.go(child, base + j) end
  for _ = 1, k do sum = sum + done:recv(); count = count + 1 end
end
local t1 = weft.now()
if count ~= n or sum ~= n * (n + 1) / 2 then B.fail("completions differ") end
B.print((t1 - t0) * 1e9 / n)
