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
end)
os.exit(0, true)
