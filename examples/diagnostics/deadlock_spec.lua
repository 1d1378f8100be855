-- A test that deadlocks: every goroutine waits for another. The engine
-- notices that nothing can ever run again and fails the test with the
-- report and a dump instead of hanging.
-- Deliberately failing; not run by `make test`. Run it with
--   busted --lua=luajit --cpath='build/?.so' examples/diagnostics/deadlock_spec.lua
local weft = require "weft"
local sync = require "weft.sync"
local async = require "weft.busted"

describe("transfer", function()
  it("moves money both ways at once", async(function()
    local a, b = sync.mutex(), sync.mutex()
    local wg, both = sync.waitgroup(), sync.waitgroup()
    both:add(2)
    local function transfer(name, first, second)
      weft.name(name)
      first:lock()
      both:done()      -- both now hold their first lock
      both:wait()
      second:lock()    -- ... and wait for each other's
      second:unlock()
      first:unlock()
      wg:done()
    end
    wg:add(2)
    weft.go(transfer, "a to b", a, b)
    weft.go(transfer, "b to a", b, a)
    wg:wait()
  end))
end)
