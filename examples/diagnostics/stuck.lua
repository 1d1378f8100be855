-- A program with goroutines waiting in different ways, one of them busy in a
-- loop that never yields. Run it with schedtrace on, and send it SIGUSR1
-- (dump and go on) or SIGQUIT (dump and exit 2):
--   WEFT_DEBUG=schedtrace=1000 build/weft -p 2 examples/diagnostics/stuck.lua &
--   kill -USR1 %1; kill -QUIT %1
local weft = require "weft"
local sync = require "weft.sync"

local requests = weft.chan()
local mu = sync.mutex()

for i = 1, 2 do
  weft.go(function()
    weft.name("handler " .. i)
    for req in requests:range() do
      mu:lock()
      print("handled", req)
      mu:unlock()
    end
  end)
end

-- An isolate (its own processor) stuck in a loop that never yields.
local stop = weft.atomic(0)
weft.spawn(function(stop)
  weft.name("hasher")
  local h = 0
  while stop:load() == 0 do h = (h * 31 + 7) % 1000003 end
end, stop)

mu:lock() -- the handlers will queue up behind this
requests:send("first")
weft.sleep(tonumber(arg[1]) or 60)
stop:store(1)
