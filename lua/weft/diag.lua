-- weft.diag: the Lua side of diagnostics (bindings/diag.c, engine/diag.c):
-- weft.dump, weft.stats, and weft.run's leak check.

local core = require "weft_core"

local M = {}

-- Frames of weft's own modules (this directory) are left out of dumps.
core.diag_libdir((debug.getinfo(1, "S").source:match("^(.*[/\\])") or "\0"))

local LEAK_GRACE = 0.5 -- seconds survivors get to finish after main returned

local function not_running(what)
  error("weft." .. what .. ": the engine is not running (start it with weft.run)", 3)
end

-- weft.dump() -> every goroutine, Go-style (engine/diag.c).
function M.dump()
  return core.dump() or not_running("dump")
end

-- weft.stats() -> goroutines by state, per-processor queues, switches,
-- steals, channel operations, timers and memory per VM.
function M.stats()
  return core.stats() or not_running("stats")
end

-- main, wrapped: once it returned, the other goroutines get LEAK_GRACE
-- seconds to finish; those still alive then fail weft.run with their dump.
function M.leakchecked(main)
  local function check(...)
    core.run_timeout(0) -- main returned: the timeout no longer applies
    local weft = require "weft"
    local deadline = core.now() + LEAK_GRACE
    while core.count() > 1 and core.now() < deadline do
      weft.sleep(0.005)
    end
    local n = core.count() - 1
    if n > 0 then
      core.fail(("weft.run: leakcheck: %d goroutine%s still alive %gs after main returned:\n\n%s")
        :format(n, n == 1 and "" or "s", LEAK_GRACE, core.dump(core.id()) or ""))
    end
    return ...
  end
  return function(...)
    return check(main(...))
  end
end

return M
