-- Uncontended sync.waitgroup add(1) + done() in one goroutine, then a wait
-- that returns at once; ns per add/done pair. Twin: bench/go/waitgroup.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
local sync = require "weft.sync"
B.name = "lua_waitgroup"
local n = B.iters(10000000)
local wg = sync.waitgroup()
local t0 = weft.now()
for _ = 1, n do
  wg:add(1)
  wg:done()
end
wg:wait()
local t1 = weft.now()
B.print((t1 - t0) * 1e9 / n)
