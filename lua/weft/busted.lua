-- weft.busted: async(fn [, opts]) turns fn into a busted test body that
-- runs as the main goroutine of weft.run with leakcheck (goroutines still
-- alive after it returned fail the test, with their dump) and a timeout
-- (the test fails with a dump of every goroutine instead of hanging). An
-- error in any goroutine, a failed assertion included, fails the test with
-- its message.
--
--   local async = require "weft.busted"
--   it("meets on a channel", async(function()
--     local c = weft.chan()
--     weft.go(function() c:send(42) end)
--     assert.are.equal(42, c:recv())
--   end))
--
-- opts: procs (default 2), timeout (seconds, default 30), leakcheck
-- (default true).

local weft = require "weft"

local DEFAULTS = { procs = 2, timeout = 30, leakcheck = true }

return function(fn, opts)
  if type(fn) ~= "function" then
    error("weft.busted: fn must be a function, got " .. type(fn), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("weft.busted: opts must be a table, got " .. type(opts), 2)
  end
  local run = {}
  for k, v in pairs(DEFAULTS) do run[k] = v end
  for k, v in pairs(opts or {}) do run[k] = v end
  return function(...)
    return weft.run(run, fn, ...)
  end
end
