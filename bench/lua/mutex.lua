-- Uncontended sync.mutex lock + unlock in one goroutine; ns per pair.
-- Twin: bench/go/mutex.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
local sync = require "weft.sync"
B.name = "lua_mutex"
local n = B.iters(10000000)
local m = sync.mutex()
local count = 0
local t0 = weft.now()
for _ = 1, n do
  m:lock()
  count = count + 1
  m:unlock()
end
local t1 = weft.now()
if count ~= n or not m:trylock() then B.fail("count or state differs") end
B.print((t1 - t0) * 1e9 / n)
