-- A test that leaks a goroutine: weft.busted's leak check fails it, listing
-- the goroutine still alive with where it waits and where it was made.
-- Deliberately failing; not run by `make test`. Run it with
--   busted --lua=luajit --cpath='build/?.so' examples/diagnostics/leak_spec.lua
local weft = require "weft"
local async = require "weft.busted"

-- Returns the first result to arrive; the slower worker is left blocked on
-- a channel nobody reads any more: the classic leak.
local function first_of(a, b)
  local results = weft.chan() -- unbuffered: the loser can never send
  weft.go(function() weft.name("worker a"); results:send(a()) end)
  weft.go(function() weft.name("worker b"); results:send(b()) end)
  return results:recv()
end

describe("first_of", function()
  it("returns the faster answer", async(function()
    local v = first_of(function() return "fast" end,
                       function() weft.sleep(0.01); return "slow" end)
    assert.are.equal("fast", v)
  end))
end)
