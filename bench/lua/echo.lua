-- Lua twin of bench/go/echo: a TCP echo server (weft.net) and 100 client
-- isolates (weft.spawn, spread over the processors), each with its own
-- connection, doing fixed-size round trips over 127.0.0.1; ns per round
-- trip over all clients (1e9 / ns = round trips per second).
--
-- Verification: every reply equals the message sent, and the server echoed
-- exactly clients * rounds * size bytes.
package.path = "bench/lua/?.lua;" .. package.path
local weft, B = require "weft", require "common"
local net = require "weft.net"
B.name = "lua_echo"
local n = B.iters(200000)
local clients, size = 100, 64
local rounds = math.ceil(n / clients)

local ln = assert(net.listen("tcp", "127.0.0.1:0"))
local addr = ln:addr()
local echoed = 0
weft.go(function()
  while true do
    local c = ln:accept()
    if not c then return end
    weft.go(function()
      while true do
        local s = c:read(4096)
        if not s then break end
        echoed = echoed + #s
        if not c:write(s) then break end
      end
      c:close()
    end)
  end
end)

local done = weft.chan(clients)
local start = weft.chan()
local t0
for i = 1, clients do
  weft.spawn(function()
    local net = require "weft.net"
    local c = assert(net.dial("tcp", addr))
    local msg = ("%03d"):format(i % 1000) .. ("m"):rep(size - 3)
    start:recv()
    local ok = true
    for _ = 1, rounds do
      assert(c:write(msg))
      local got = ""
      while #got < size do
        got = got .. assert(c:read(size - #got))
      end
      if got ~= msg then ok = false end
    end
    c:close()
    done:send(ok)
  end)
end
t0 = weft.now()
for _ = 1, clients do start:send(true) end
for _ = 1, clients do
  if not done:recv() then B.fail("a reply differs from its message") end
end
local t1 = weft.now()
while echoed < clients * rounds * size do weft.sleep(0.001) end
if echoed ~= clients * rounds * size then B.fail("echoed " .. echoed .. " bytes") end
ln:close()
B.print((t1 - t0) * 1e9 / (clients * rounds))
