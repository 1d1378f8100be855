-- Memory per blocked goroutine: N goroutines (default 1,000,000) blocked
-- receiving on one channel; resident memory is read before and after, then
-- the channel is closed and every goroutine must finish. Prints bytes per
-- goroutine. Twin: bench/go/blocked_mem.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
B.name = "lua_blocked_mem"
local n = B.iters(1000000)

local function rss()
  local f = assert(io.open("/proc/self/statm"))
  local _, resident = f:read("*n", "*n")
  f:close()
  return resident * 4096
end

collectgarbage()
local before = rss()
local c, finished = weft.chan(), 0
local function waiter()
  local _, ok = c:recv()
  if not ok then finished = finished + 1 end
end
for _ = 1, n do weft.go(waiter) end
weft.yield() -- let every one of them run up to its receive and park
if weft.count() ~= n + 1 then B.fail("only " .. weft.count() .. " goroutines alive") end
collectgarbage()
local after = rss()
c:close()
while finished < n do weft.yield() end
io.stderr:write(("%d goroutines blocked: %.0f MB resident\n"):format(n, (after - before) / 2^20))
B.print((after - before) / n)
