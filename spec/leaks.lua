-- spec/leaks.lua — run by `make asan` under LeakSanitizer (not by busted):
-- the paths that drop values instead of sending them (a send or select that
-- cannot block, a select whose later case cannot be copied, send cases not
-- taken) and goroutine reuse must free everything. The state is closed at
-- the end so that only real leaks remain to be reported.
local weft = require "weft"
weft.run(function()
  local c = weft.chan()
  for _ = 1, 10 do
    pcall(table.sort, { 2, 1 }, function(x, y) c:send(("x"):rep(100)) return x < y end)
    pcall(table.sort, { 2, 1 }, function(x, y) weft.select(weft.send(c, ("y"):rep(100)), weft.send(c, { 1, 2 })) return x < y end)
    pcall(weft.select, weft.send(c, ("a"):rep(100)), weft.send(c, coroutine.create(print)))
  end
  local long = ("v"):rep(1000)
  local full, open = weft.chan(1), weft.chan(4)
  full:send(0)
  for i = 1, 10 do weft.select(weft.send(full, long), weft.send(open, {long})); open:recv() end
  weft.go(function() c:send(long) end)
  c:recv()
  -- Selects that end at once: a receive chosen beside a send case, a send
  -- case on a closed channel chosen (raises), the default chosen; every
  -- send value the select did not take is freed.
  local shut = weft.chan(1)
  shut:close()
  for i = 1, 10 do
    open:send(i)
    weft.select(weft.recv(open), weft.send(full, { long }))
    pcall(weft.select, weft.send(shut, long .. i), weft.send(full, { long }))
    weft.select(weft.send(full, long), weft.send(c, { long }), weft.default())
  end
end)
-- Contexts: cancelled, timed out, dropped uncancelled, with values and
-- causes, passed to isolates; none may outlive its last reference.
local context = require "weft.context"
weft.run({ procs = 2 }, function()
  local root, cancel_root = context.with_cancel(context.background())
  local done = weft.chan()
  for i = 1, 100 do
    local c, cancel = context.with_timeout(context.with_value(root, "k", { i, ("x"):rep(50) }), 60)
    local _ = c:done(), c:value("k")
    if i % 2 == 0 then cancel({ why = ("y"):rep(50) }) end
  end
  weft.spawn(function() context.with_cancel(root):done():recv(); done:send(context.cause(root)) end)
  local t = context.with_timeout(root, 0.001)
  t:done():recv()
  cancel_root(("z"):rep(100))
  done:recv()
end)
-- The netpoller: the engine stops with goroutines (and an isolate) parked
-- on fds, with and without timeouts; their watchers go with the engine.
local net = require "weft.net"
weft.run({ procs = 2 }, function()
  local ln = assert(net.listen("tcp", "127.0.0.1:0"))
  local addr = ln:addr()
  local c = assert(net.dial("tcp", addr))
  local s = assert(ln:accept())
  weft.go(function() ln:accept() end)
  weft.go(function() c:read(10) end)
  weft.go(function() weft.io.wait(s.fd, "r", 60) end)
  local ready = weft.chan()
  weft.spawn(function()
    local c2 = assert(require("weft.net").dial("tcp", addr))
    ready:send(true)
    c2:read(1)
  end)
  ready:recv()
  weft.sleep(0.01)
end)
collectgarbage()
collectgarbage()
assert(context.live() == 0, "contexts left: " .. context.live())
os.exit(0, true)
