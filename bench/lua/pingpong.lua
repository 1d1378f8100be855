-- Lua twin of bench/c/pingpong.c and bench/go/pingpong: two goroutines
-- exchange numbers over two unbuffered channels; ns per message.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_pingpong"
local n = B.iters(200000)
local ping, pong, done = weft.chan(), weft.chan(), weft.chan(1)
weft.go(function()
  local sum = 0
  for v in ping:range() do sum = sum + v; pong:send(v) end
  done:send(sum)
end)
local sum = 0
local t0 = weft.now()
for i = 1, n do
  ping:send(i)
  local v = pong:recv()
  if v ~= i then B.fail(("sent %d, got back %s"):format(i, tostring(v))) end
  sum = sum + v
end
local t1 = weft.now()
ping:close()
local want = n * (n + 1) / 2
if sum ~= want or done:recv() ~= want then B.fail("sums differ") end
B.print((t1 - t0) * 1e9 / (2 * n))
