-- examples/echo_server.lua — a TCP echo server on weft.net: one goroutine
-- per connection, each parked on its socket while it waits, so thousands of
-- idle connections cost no threads. Lines are echoed back; "quit" closes the
-- connection, and an idle connection is closed after `idle` seconds.
--
--   build/weft examples/echo_server.lua [host:port] [idle]
--   (another terminal)  nc 127.0.0.1 7007
--
-- With "selftest" as the address it serves on a free port, runs 50 clients
-- against itself and exits (what `make test` could run; it prints a summary).
local weft = require "weft"
local net = require "weft.net"

local addr = arg[1] or "127.0.0.1:7007"
local idle = tonumber(arg[2]) or 60
local selftest = addr == "selftest"
if selftest then addr = "127.0.0.1:0" end

local function serve(conn)
  while true do
    conn:set_read_deadline(weft.now() + idle)
    local line, err = conn:read_line()
    if not line or line == "quit" then
      if err == "timeout" then conn:write("idle too long, bye\n") end
      break
    end
    if not conn:write(line .. "\n") then break end
  end
  conn:close()
end

local ln = assert(net.listen("tcp", addr))
io.stderr:write("echo server on ", ln:addr(), "\n")
weft.go(function()
  while true do
    local conn, err = ln:accept()
    if not conn then
      if err ~= "closed" then io.stderr:write("accept: ", err, "\n") end
      return
    end
    weft.go(serve, conn)
  end
end)

if not selftest then
  weft.select() -- serve until killed
end

-- Self-test: clients in isolates on every processor, each checking its echoes.
local where = ln:addr()
local results = weft.chan(50)
for i = 1, 50 do
  weft.spawn(function()
    local net = require "weft.net"
    local c = assert(net.dial("tcp", where, 5))
    local ok = 0
    for k = 1, 100 do
      local msg = ("client %d line %d"):format(i, k)
      assert(c:write(msg .. "\n"))
      if c:read_line() == msg then ok = ok + 1 end
    end
    c:write("quit\n")
    c:close()
    results:send(ok)
  end)
end
local total = 0
for _ = 1, 50 do total = total + results:recv() end
ln:close()
print(("%d of %d lines echoed"):format(total, 50 * 100))
