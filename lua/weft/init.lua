-- weft: Go-style goroutines, channels, select and timers for LuaJIT.
--
-- Goroutines are Lua coroutines run by the engine's scheduler (weft_core).
-- A blocking operation asks the core to wait; if it must, the goroutine
-- yields WAIT to the scheduler and, once woken, collects the result. User
-- coroutines inside goroutines keep working: the wrappers below pass a WAIT
-- (or YIELD) from an inner coroutine up to the scheduler and resume the inner
-- coroutine afterwards, so a block inside a generator parks the whole
-- goroutine. Where Lua cannot yield, a blocking operation raises
-- "cannot block here: <context>" instead of hanging.

local core = require "weft_core"

local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_isyieldable = coroutine.status, coroutine.isyieldable
local select, error, type, getinfo = select, error, type, debug.getinfo
local unpack = unpack or table.unpack
local WAIT, YIELD = core.WAIT, core.YIELD
local core_send, core_recv, core_select = core.send, core.recv, core.select
local send_finish, recv_finish, select_finish = core.send_finish, core.recv_finish, core.select_finish

local weft = { version = core.version }

-- ---- blocking ----------------------------------------------------------------

-- Why the caller cannot yield: the innermost C function on the stack that
-- calls back into Lua.
local contexts = {
  [table.sort] = "table.sort comparator",
  [string.gsub] = "string.gsub callback",
  [require] = "top level of a required chunk",
  [collectgarbage] = "__gc metamethod",
  [pcall] = false, [xpcall] = false, [error] = false,
}
local function block_context()
  for level = 3, 60 do
    local info = getinfo(level, "nSf")
    if not info then break end
    if info.what == "C" then
      local known = contexts[info.func]
      if known then return known end
      if known == nil then
        return info.name and ("inside " .. info.name)
            or "inside a C function or metamethod (such as __gc)"
      end
    end
  end
  -- A finalizer run by an implicit collection sits right on the Lua frame
  -- it interrupted, with no C frame to show for it.
  return "__gc metamethod or another place Lua cannot yield across"
end

local function cannot_block()
  error("cannot block here: " .. block_context(), 3)
end

-- ---- goroutines --------------------------------------------------------------

local function finish_run(ok, ...)
  if not ok then error((...), 0) end
  return ...
end

function weft.run(opts, main, ...)
  if type(opts) == "function" then
    return weft.run(nil, opts, main, ...)
  end
  if type(main) ~= "function" then
    error("weft.run: main must be a function, got " .. type(main), 2)
  end
  if core.id() ~= 0 then
    return main(...) -- already inside a goroutine
  end
  local procs = opts and opts.procs
  if procs ~= nil and (type(procs) ~= "number" or procs < 1 or procs % 1 ~= 0) then
    error("weft.run: opts.procs must be a positive whole number, got " .. tostring(procs), 2)
  end
  return finish_run(core.run(procs or 0, main, ...))
end

function weft.go(fn, ...)
  if type(fn) ~= "function" then
    error("weft.go: fn must be a function, got " .. type(fn), 2)
  end
  return core.go(fn, ...)
end

-- Isolated goroutines (one VM per processor) are not built yet; say so
-- plainly rather than fail with "attempt to call a nil value".
function weft.spawn()
  error("weft.spawn: isolated goroutines are not available in this version of weft " ..
    "(use weft.go, which shares memory and runs on one processor)", 2)
end

function weft.yield()
  if core.id() ~= 0 and co_isyieldable() then
    co_yield(YIELD)
  end
end

function weft.sleep(seconds)
  if type(seconds) ~= "number" then
    error("weft.sleep: seconds must be a number, got " .. type(seconds), 2)
  end
  if not co_isyieldable() then cannot_block() end
  co_yield(core.sleep(seconds) == 1 and WAIT or YIELD)
end

weft.now, weft.id, weft.count, weft.procs = core.now, core.id, core.count, core.procs

local names = setmetatable({}, { __mode = "k" })
function weft.name(str)
  names[coroutine.running() or false] = tostring(str)
end

-- Starts a native goroutine running cfunc(arg) on its own stack: cfunc is a
-- C function `void f(void *)` reached through the FFI; arg is nil, a cdata
-- pointer, or channels (cfunc then gets a NULL-terminated weft_chan *array,
-- each channel kept alive until cfunc returns).
local ffi
function weft.go_native(cfunc, ...)
  ffi = ffi or require "ffi"
  if type(cfunc) ~= "cdata" then
    error("weft.go_native: cfunc must be a C function (cdata), got " .. type(cfunc), 2)
  end
  local ok, fp = pcall(ffi.cast, "void (*)(void *)", cfunc)
  if not ok then error("weft.go_native: cfunc is not a C function: " .. tostring(fp), 2) end
  local addr = tonumber(ffi.cast("uintptr_t", fp))
  local arg = ...
  if type(arg) == "cdata" then
    return core.go_native(addr, tonumber(ffi.cast("uintptr_t", arg)))
  elseif arg == nil then
    return core.go_native(addr, nil)
  end
  return core.go_native(addr, nil, ...)
end

-- ---- channels ------------------------------------------------------------------

local Chan = {}
Chan.__index = Chan

function weft.chan(capacity)
  if capacity ~= nil and type(capacity) ~= "number" then
    error("weft.chan: capacity must be a number, got " .. type(capacity), 2)
  end
  return core.chan(capacity or 0)
end

function Chan:send(v)
  local rc = core_send(self, v, co_isyieldable())
  if rc == 0 then return end
  if rc == 2 then cannot_block() end
  co_yield(WAIT)
  send_finish()
end

local function recv_result(rc, v, ok)
  if rc == 0 then return v, ok end
  if rc == 2 then cannot_block() end
  co_yield(WAIT)
  return recv_finish()
end

function Chan:recv()
  return recv_result(core_recv(self, co_isyieldable()))
end

function Chan:close() core.close(self) end
function Chan:len() return core.len(self) end
function Chan:cap() return core.cap(self) end

local function range_next(ch)
  local v, ok = ch:recv()
  if ok then return v end
  return nil
end
function Chan:range()
  return range_next, self
end

local chan_mt = core.chan_mt
chan_mt.__index = Chan

-- ---- select ----------------------------------------------------------------------

local RECV, SEND, DEFAULT = 1, 2, 3

function weft.recv(ch, fn) return { RECV, ch, nil, fn } end
function weft.send(ch, v, fn) return { SEND, ch, v, fn } end
function weft.default(fn) return { DEFAULT, nil, nil, fn } end

local function finish_select(cases, map, i, v, ok)
  local case = cases[map[i]]
  local fn = case[4]
  if fn then
    if case[1] == RECV then return fn(v, ok) end
    return fn()
  end
  if case[1] == RECV then return map[i], v, ok end
  return map[i]
end

function weft.select(...)
  local n = select("#", ...)
  local cases = { ... }
  local args, map, m, default = {}, {}, 0, nil
  for i = 1, n do
    local c = cases[i]
    if type(c) ~= "table" or not c[1] then
      error("weft.select: case " .. i .. " is not a case (use weft.recv, weft.send, weft.default)", 2)
    end
    if c[1] == DEFAULT then
      if default then error("weft.select: more than one default case", 2) end
      default = i
    else
      m = m + 1
      map[m] = i
      args[3 * m - 2], args[3 * m - 1], args[3 * m] = c[1], c[2], c[3]
    end
  end
  local yieldable = co_isyieldable()
  local rc, i, v, ok = core_select(m, default ~= nil, yieldable, unpack(args, 1, 3 * m))
  if rc == 2 then cannot_block() end
  if rc == 1 then
    co_yield(WAIT)
    i, v, ok = select_finish()
  end
  if i == 0 then
    local fn = cases[default][4]
    if fn then return fn() end
    return default
  end
  return finish_select(cases, map, i, v, ok)
end

-- ---- timers -------------------------------------------------------------------------

weft.after = core.after

local Timer = {}
Timer.__index = Timer
function Timer:stop() return core.timer_stop(self._t) end
function Timer:reset(seconds) return core.timer_reset(self._t, seconds) end

local function new_timer(seconds, ticker, what)
  if type(seconds) ~= "number" then
    error(what .. ": seconds must be a number, got " .. type(seconds), 3)
  end
  local t, c = core.timer(seconds, ticker)
  return setmetatable({ _t = t, c = c }, Timer)
end

function weft.timer(seconds) return new_timer(seconds, false, "weft.timer") end
function weft.ticker(seconds) return new_timer(seconds, true, "weft.ticker") end

function weft.after_func(seconds, fn)
  if type(fn) ~= "function" then
    error("weft.after_func: fn must be a function, got " .. type(fn), 2)
  end
  local t = weft.timer(seconds)
  local c = t.c
  weft.go(function()
    local _, ok = c:recv()
    if ok then fn() end
  end)
  return t
end

-- ---- user coroutines inside goroutines ------------------------------------------------

-- Resumes co; while it asks to park (WAIT/YIELD), parks this goroutine too
-- and resumes co again once woken.
local function pass_up(co, ok, first, ...)
  if ok and (first == WAIT or first == YIELD) and select("#", ...) == 0
      and co_status(co) == "suspended" then
    co_yield(first)
    return pass_up(co, co_resume(co))
  end
  return ok, first, ...
end

function coroutine.resume(co, ...)
  return pass_up(co, co_resume(co, ...))
end

function coroutine.wrap(fn)
  local co = co_create(fn)
  return function(...)
    local function check(ok, ...)
      if not ok then error((...), 2) end
      return ...
    end
    return check(pass_up(co, co_resume(co, ...)))
  end
end

return weft
