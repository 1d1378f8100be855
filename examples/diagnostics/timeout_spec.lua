-- A test that never finishes although something could still wake it (a
-- ticker keeps firing): not a deadlock, so weft.busted's timeout fails it,
-- with a dump of every goroutine.
-- Deliberately failing; not run by `make test`. Run it with
--   busted --lua=luajit --cpath='build/?.so' examples/diagnostics/timeout_spec.lua
local weft = require "weft"
local async = require "weft.busted"

describe("poller", function()
  it("stops once the job is done", async(function()
    local done = weft.chan()
    local ticker = weft.ticker(0.05)
    weft.go(function()
      weft.name("job")
      weft.sleep(0.1)
      -- forgot: done:close()
    end)
    while true do
      local finished = weft.select(
        weft.recv(done, function() return true end),
        weft.recv(ticker.c, function() return false end))
      if finished then break end
    end
    ticker:stop()
  end, { timeout = 1 }))
end)
