-- Lua twin of bench/c/select.c: a 2-case select with one case ready (a
-- producer keeps a channel of 128 fed; the other channel never is).
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_select"
local n = B.iters(500000)
local data, never = weft.chan(128), weft.chan()
local t0 = weft.now()
weft.go(function() for i = 1, n do data:send(i) end end)
local sum = 0
for i = 1, n do
  local k, v, ok = weft.select(weft.recv(data), weft.recv(never))
  if k ~= 1 or not ok or v ~= i then B.fail(("select %d: case %s value %s"):format(i, tostring(k), tostring(v))) end
  sum = sum + v
end
local t1 = weft.now()
if sum ~= n * (n + 1) / 2 then B.fail("sum differs") end
B.print((t1 - t0) * 1e9 / n)
