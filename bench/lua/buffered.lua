-- Lua twin of bench/c/buffered.c: producer -> consumer over a channel of
-- 128; ns per message.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_buffered"
local n = B.iters(1000000)
local c = weft.chan(128)
local t0 = weft.now()
weft.go(function()
  for i = 1, n do c:send(i) end
  c:close()
end)
local sum, expect = 0, 1
for v in c:range() do
  if v ~= expect then B.fail(("got %d, want %d"):format(v, expect)) end
  expect = expect + 1
  sum = sum + v
end
local t1 = weft.now()
if sum ~= n * (n + 1) / 2 then B.fail("sum differs") end
B.print((t1 - t0) * 1e9 / n)
