-- weft: Go-style goroutines, channels, select and timers for LuaJIT.
--
-- Goroutines are Lua coroutines run by the engine's scheduler (weft_core).
-- A channel operation or select is an FFI call (bindings/fast.c) that
-- completes at once or records the operation; then the goroutine yields OP
-- to the scheduler, which starts it and parks the goroutine, and once woken
-- the goroutine collects the result with another FFI call. User coroutines
-- inside goroutines keep working: the wrappers below pass an OP (or YIELD)
-- from an inner coroutine up to the scheduler and resume the inner coroutine
-- afterwards, so a block inside a generator parks the whole goroutine. Where
-- Lua cannot yield, a blocking operation raises "cannot block here:
-- <context>" instead of hanging.

local core = require "weft_core"
local ffi = require "ffi"

-- The coroutine functions as Lua made them: this module may be loaded again
-- into the same VM (e.g. by a test runner that unloads modules), and must
-- not wrap its own wrappers.
local originals = debug.getregistry()["weft.coroutine"]
if not originals then
  originals = { resume = coroutine.resume }
  debug.getregistry()["weft.coroutine"] = originals
end
local co_create, co_resume, co_yield = coroutine.create, originals.resume, coroutine.yield
local co_status, co_isyieldable = coroutine.status, coroutine.isyieldable
local select, error, type, getinfo = select, error, type, debug.getinfo
local OP, YIELD = core.OP, core.YIELD
local CANNOT = core.CANNOT -- resumed with this by a wrapper that cannot pass OP up

ffi.cdef [[
typedef struct weft_lua_val {
  union { int64_t i; uint64_t u; double d; void *p; char b[8]; } u;
  uint32_t len; uint16_t tag; uint16_t flags;
} weft_lua_val;
typedef struct weft_lua_case { void *ch; int dir; weft_lua_val val; int ok; } weft_lua_case;
typedef struct weft_lua_chanref { void *c; } weft_lua_chanref;
int weft_lua_send(void *ch, weft_lua_val *v);
int weft_lua_send_finish(void *ch);
int weft_lua_recv(void *ch, weft_lua_val *out);
int weft_lua_recv_finish(void *ch, weft_lua_val *out);
int weft_lua_select(weft_lua_case *cs, int n, int nonblock);
int weft_lua_select_finish(weft_lua_case *res);
void weft_lua_drop(void);
int weft_lua_val_bytes(weft_lua_val *v, const void *p, size_t len, int tag);
void weft_lua_free(void *p, int flags);
void weft_lua_val_free(weft_lua_val *v);
double weft_lua_sync_load(void *o, int i);
void weft_lua_sync_store(void *o, int i, double v);
double weft_lua_sync_add(void *o, int i, double d);
int weft_lua_sync_cas(void *o, int i, double old, double v);
int weft_lua_sema_acquire(void *o, int i, double k, int reason);
int weft_lua_sema_finish(void);
int weft_lua_sema_release(void *o, int i, double k);
int weft_lua_sema_tryacquire(void *o, int i, double k);
double weft_lua_atomic_load(void *a);
void weft_lua_atomic_store(void *a, double v);
double weft_lua_atomic_add(void *a, double d);
double weft_lua_atomic_swap(void *a, double v);
int weft_lua_atomic_cas(void *a, double old, double v);
int weft_lua_can_yield(void);
]]
local C, ffi_string = ffi.C, ffi.string

-- Whether the running code may yield (park). coroutine.isyieldable is a C
-- function that stops a JIT trace at every blocking operation; the FFI
-- call (bindings/yieldable.c) stays in it, and answers -1 where it does
-- not know.
local function can_yield()
  local r = C.weft_lua_can_yield()
  if r < 0 then return co_isyieldable() end
  return r ~= 0
end
local DONE, BLOCK, CLOSED = 0, 2, 3
local SEL_NONE, SEL_NOTG, SEL_BLOCK = -1, -3, -5
local TAG_RAW, TAG_BOOL, TAG_NUMBER, TAG_PLAIN, TAG_SHAPED = 0, 1, 2, 17, 18
local core_encode, core_decode = core.encode, core.decode

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

-- level: of the caller of the blocking API function, as error() counts.
local function cannot_block(level)
  error("cannot block here: " .. block_context(), level + 1)
end

-- Parks the goroutine until the operation it recorded (bindings/fast.c) is
-- done: yields OP to the scheduler, which starts it. Where Lua cannot yield
-- (or a coroutine wrapper below answers CANNOT), the operation is dropped
-- and "cannot block here" raised. level: as for cannot_block.
-- Drops the recorded operation and raises "cannot block here"; level: as
-- for cannot_block.
local function dropped(level)
  C.weft_lua_drop()
  cannot_block(level + 1)
end

local function block(level)
  if not can_yield() or co_yield(OP) == CANNOT then dropped(level + 1) end
end

-- ---- goroutines --------------------------------------------------------------

local diag = require "weft.diag"

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
  local timeout = opts and opts.timeout
  if timeout ~= nil and (type(timeout) ~= "number" or not (timeout > 0)) then
    error("weft.run: opts.timeout must be a positive number of seconds, got " .. tostring(timeout), 2)
  end
  if opts and opts.leakcheck then
    main = diag.leakchecked(main)
  end
  core.run_timeout(timeout or 0)
  return finish_run(core.run(procs or 0, main, ...))
end

weft.go = core.go -- checks fn itself: one call less per goroutine

-- Isolated goroutines: fn, its upvalues, the user globals it reads and the
-- arguments are copied (lua/weft/transfer.lua; module values travel by
-- name) into a new isolate that the scheduler may start on any processor,
-- in that processor's VM, with an environment of its own whose reads fall
-- through to the VM's globals.
local transfer = require "weft.transfer"

function weft.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("weft.spawn: fn must be a function, got " .. type(fn), 2)
  end
  local packed = transfer.pack(fn, ...) -- raises at our caller's level
  local id = core.spawn(packed, package.path, package.cpath) -- not a tail call: the
  return id                                                  -- dump's "created by" is our caller
end

-- Runs in the VM where the isolate starts: the spawner's module paths
-- first, so that modules sent by name (and those the isolate requires) are
-- found as they were where it was spawned.
local function start_isolate(packed, path, cpath)
  if path then package.path = path end
  if cpath then package.cpath = cpath end
  local env = setmetatable({}, { __index = _G })
  return (function(fn, ...) return fn(...) end)(transfer.unpack(packed, env))
end
core.set_isolate_starter(start_isolate)

function weft.yield()
  if core.id() ~= 0 and can_yield() then
    co_yield(YIELD)
  end
end

function weft.sleep(seconds)
  if type(seconds) ~= "number" then
    error("weft.sleep: seconds must be a number, got " .. type(seconds), 2)
  end
  if not can_yield() then cannot_block(2) end
  if core.sleep(seconds) == 1 then
    block(2)
  else
    co_yield(YIELD)
  end
end

weft.now, weft.id, weft.count, weft.procs = core.now, core.id, core.count, core.procs

function weft.name(str)
  core.name(tostring(str))
end

weft.dump, weft.stats = diag.dump, diag.stats

-- Starts a native goroutine running cfunc(arg) on its own stack: cfunc is a
-- C function `void f(void *)` reached through the FFI; arg is nil, a cdata
-- pointer, or channels (cfunc then gets a NULL-terminated weft_chan *array,
-- each channel kept alive until cfunc returns).
function weft.go_native(cfunc, ...)
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
-- Send, receive and select are FFI calls (bindings/fast.c describes the
-- protocol) that JIT traces compile. Numbers, booleans and strings are
-- written and read here; plain tables go in LuaJIT's serialization format;
-- other values through the codec (core.encode and core.decode).
--
-- SV, RV, SC and RES (and ENC, DEC, the plain-table check's list) are this
-- VM's scratch buffers. `busy` is set while one is between being written and
-- being consumed; those windows never span a yield, but the collector may
-- run a finalizer inside one (any FFI access in the interpreter may), and a
-- finalizer that uses a channel then gets buffers of its own ("nested").

local SV, RV = ffi.new("weft_lua_val[1]"), ffi.new("weft_lua_val[1]")
local RES = ffi.new("weft_lua_case[1]")
-- A channel's userdata as its payload (bindings/host.h's lchan), whose
-- first field is the engine's channel: a select's cases hold that pointer.
local cast, CHANREF = ffi.cast, ffi.typeof("weft_lua_chanref *")
local SC, SCN = ffi.new("weft_lua_case[?]", 16), 16
local busy = false

-- level: as for cannot_block.
local function not_in_goroutine(what, level)
  error("weft." .. what .. ": not inside a goroutine (start one with weft.run)", level + 1)
end

-- Plain data (tables of booleans, numbers and strings and such tables, no
-- metatable, no table reached twice, not too big) travels in LuaJIT's own
-- serialization format (string.buffer), which works inside the VM and is
-- many times faster than the codec's walk through the C API; anything else
-- goes through the codec. PLAIN_TABLES bounds the check's work.
local has_buffer, sbuf = pcall(require, "string.buffer")
local shape = require "weft.shape"
local shape_encode, shape_decode = shape.encode, shape.decode
local ENC, DEC = has_buffer and sbuf.new(), has_buffer and sbuf.new()
local PLAIN_TABLES, PLAIN_DEPTH = 8, 4
local visited, nvisited = {}, 0

local function plain_table(t, depth)
  if getmetatable(t) ~= nil or depth > PLAIN_DEPTH or nvisited >= PLAIN_TABLES then return false end
  for i = 1, nvisited do
    if visited[i] == t then return false end
  end
  nvisited = nvisited + 1
  visited[nvisited] = t
  -- `next` called rather than a `for ... in next, t` loop, whose compiled
  -- form can end early in this LuaJIT (see weft/shape.lua).
  local k, v = next(t)
  while k ~= nil do
    local tk, tv = type(k), type(v)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" then return false end
    if tv == "table" then
      if not plain_table(v, depth + 1) then return false end
    elseif tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      return false
    end
    k, v = next(t, k)
  end
  return true
end

local function is_plain(t)
  nvisited = 0
  local ok = plain_table(t, 1)
  for i = 1, nvisited do visited[i] = nil end
  return ok
end

-- Writes v into sv (a weft_lua_val[1]); returns an error message instead of
-- raising. nested: sv is a finalizer's own buffer (no plain path: ENC and
-- the check's list may be in use).
local function put(v, sv, nested)
  local t = type(v)
  if t == "number" then
    local b = sv[0]
    b.u.d = v; b.len = 8; b.tag = TAG_NUMBER; b.flags = 0
  elseif t == "string" then
    if C.weft_lua_val_bytes(sv, v, #v, TAG_RAW) ~= 0 then return "out of memory" end
  elseif t == "boolean" then
    local b = sv[0]
    b.u.i = v and 1 or 0; b.len = 8; b.tag = TAG_BOOL; b.flags = 0
  elseif v == nil then
    return "send of nil value"
  elseif t == "table" and not nested and shape_encode(v, sv, TAG_SHAPED) then
    return
  elseif t == "table" and has_buffer and not nested and is_plain(v) then
    ENC:reset()
    ENC:encode(v)
    local p, len = ENC:ref()
    if C.weft_lua_val_bytes(sv, p, len, TAG_PLAIN) ~= 0 then return "out of memory" end
  else
    local ok, err = pcall(core_encode, v, sv)
    if not ok then return err end
  end
end

-- The value in rv, whose heap buffer (if any) it frees; or nil and an error
-- message. nested: rv is a finalizer's own buffer (DEC may be in use).
local function take(rv, nested)
  local b = rv[0]
  local tag = b.tag
  if tag == TAG_NUMBER then return b.u.d end
  if tag == TAG_RAW or tag == TAG_PLAIN or tag == TAG_SHAPED then
    local len, flags = b.len, b.flags
    local heap = flags ~= 0
    local p = heap and b.u.p or nil
    local v, err
    if tag == TAG_RAW then
      v = ffi_string(heap and p or b.u.b, len)
    elseif tag == TAG_SHAPED then
      v, err = shape_decode(heap and p or b.u.b, len)
    elseif nested then
      v = sbuf.decode(ffi_string(heap and p or b.u.b, len))
    else
      if heap then DEC:set(p, len) else DEC:set(ffi_string(b.u.b, len)) end
      v = DEC:decode()
    end
    if heap then C.weft_lua_free(p, flags) end
    return v, err
  end
  if tag == TAG_BOOL then return b.u.i ~= 0 end
  local ok, v = pcall(core_decode, rv)
  if ok then return v end
  return nil, v
end

local Chan = {}
Chan.__index = Chan
local chan_mt = core.chan_mt

function weft.chan(capacity)
  if capacity ~= nil and type(capacity) ~= "number" then
    error("weft.chan: capacity must be a number, got " .. type(capacity), 2)
  end
  return core.chan(capacity or 0)
end

-- The blocking paths below yield in line, not through block(): a JIT trace
-- through an extra frame or two would need a bigger Lua stack, and every
-- blocked goroutine would keep it (twice the memory per goroutine).

-- For weft.sync: drops the recorded operation and raises "cannot block
-- here" at `level` (as error() counts, from the caller of this function).
weft._cannot_block = dropped
weft._can_yield = can_yield

local function check_self(ch, what)
  if getmetatable(ch) ~= chan_mt then
    error("bad argument #1 to '" .. what .. "' (weft.chan expected, got " .. type(ch) .. ")", 3)
  end
end

-- Raises for a finished operation's outcome rc (and a failed take's err).
local function op_fail(what, rc, err)
  if err then error(err, 3) end
  if rc == CLOSED then error("send on closed channel", 0) end
  if rc == BLOCK then dropped(3) end
  not_in_goroutine(what, 3)
end

-- A send or receive from a finalizer run inside another one's window:
-- buffers of its own; it cannot wait (a finalizer cannot yield).
local function send_nested(ch, v)
  local sv = ffi.new("weft_lua_val[1]")
  local err = put(v, sv, true)
  if err then error(err, 3) end
  local rc = C.weft_lua_send(ch, sv)
  if rc ~= DONE then op_fail("send", rc) end
end

local function recv_nested(ch)
  local rv = ffi.new("weft_lua_val[1]")
  local rc = C.weft_lua_recv(ch, rv)
  if rc == DONE then
    local v, err = take(rv, true)
    if err then op_fail("recv", rc, err) end
    return v, true
  end
  if rc == CLOSED then return nil, false end
  op_fail("recv", rc)
end

function Chan:send(v)
  check_self(self, "send")
  if busy then return send_nested(self, v) end
  busy = true
  local err = put(v, SV)
  if err then
    busy = false
    error(err, 2)
  end
  local rc = C.weft_lua_send(self, SV)
  busy = false
  if rc == DONE then return end
  if rc == BLOCK then
    if not can_yield() or co_yield(OP) == CANNOT then dropped(2) end
    rc = C.weft_lua_send_finish(self) -- self: kept alive across the yield
    if rc == DONE then return end
  end
  if rc == CLOSED then error("send on closed channel", 0) end
  not_in_goroutine("send", 2)
end

-- Receives on ch for recv and range: rc, v, err.
local function recv_op(ch)
  busy = true
  local rc = C.weft_lua_recv(ch, RV)
  if rc == BLOCK then
    busy = false
    if not can_yield() or co_yield(OP) == CANNOT then dropped(3) end -- at recv's caller
    busy = true
    rc = C.weft_lua_recv_finish(ch, RV) -- ch: kept alive across the yield
  end
  local v, err
  if rc == DONE then v, err = take(RV) end
  busy = false
  return rc, v, err
end

function Chan:recv()
  check_self(self, "recv")
  if busy then return recv_nested(self) end
  local rc, v, err = recv_op(self)
  if rc == DONE and not err then return v, true end
  if rc == CLOSED then return nil, false end
  op_fail("recv", rc, err)
end

function Chan:close() core.close(self) end
function Chan:len() return core.len(self) end
function Chan:cap() return core.cap(self) end

local function range_next(ch)
  if busy then return (recv_nested(ch)) end
  local rc, v, err = recv_op(ch)
  if rc == DONE and not err then return v end
  if rc == CLOSED then return nil end
  op_fail("recv", rc, err)
end
function Chan:range()
  check_self(self, "range")
  return range_next, self
end

chan_mt.__index = Chan

-- ---- select ----------------------------------------------------------------------

local RECV, SEND, DEFAULT = 1, 2, 3

local function check_chan(ch, what)
  if ch ~= nil and getmetatable(ch) ~= chan_mt then
    error(what .. ": ch must be a channel or nil, got " .. type(ch), 3)
  end
end

function weft.recv(ch, fn)
  check_chan(ch, "weft.recv")
  return { RECV, ch, nil, fn }
end
function weft.send(ch, v, fn)
  check_chan(ch, "weft.send")
  if v == nil then error("weft.send: send of nil value", 2) end
  return { SEND, ch, v, fn }
end
function weft.default(fn) return { DEFAULT, nil, nil, fn } end

-- The case of the k-th (1-based) non-default case among ...
local function nth_case(k, ...)
  for i = 1, select("#", ...) do
    local c = select(i, ...)
    if c[1] ~= DEFAULT then
      k = k - 1
      if k == 0 then return c, i end
    end
  end
end

local function default_case(...)
  for i = 1, select("#", ...) do
    local c = select(i, ...)
    if c[1] == DEFAULT then return c, i end
  end
end

-- Frees the send values written into sc[0 .. m-1] (the select did not run).
local function free_cases(sc, m)
  for k = 0, m - 1 do
    if sc[k].dir == SEND then C.weft_lua_val_free(sc[k].val) end
  end
end

-- The chosen case k (0-based among the channel cases), whose result is in
-- rcs[ri]: releases the buffers (busy) before any handler runs.
local function select_done(k, rcs, ri, rv, nested, ...)
  local c, i = nth_case(k + 1, ...)
  local fn, ok = c[4], rcs[ri].ok ~= 0
  local v, err
  if c[1] == RECV and ok then
    rv[0] = rcs[ri].val
    v, err = take(rv, nested)
  end
  if not nested then busy = false end
  if err then error(err, 3) end
  if c[1] == RECV then
    if fn then return fn(v, ok) end
    return i, v, ok
  end
  if not ok then error("send on closed channel", 0) end
  if fn then return fn() end
  return i
end

local function run_default(...)
  local c, i = default_case(...)
  if c[4] then return c[4]() end
  return i
end

-- select with the buffers given (this VM's, or a finalizer's own).
local function select_with(sc, res, sv, rv, nested, n, ...)
  local m, default = 0, false
  for i = 1, n do
    local c = select(i, ...)
    local kind = type(c) == "table" and c[1]
    if kind == RECV or kind == SEND then
      local slot, ch = sc[m], c[2]
      slot.ch = ch ~= nil and cast(CHANREF, ch).c or nil -- the engine's channel
      slot.dir = kind
      m = m + 1
      if kind == SEND then
        local err = put(c[3], sv, nested)
        if err then
          free_cases(sc, m - 1)
          return nil, err
        end
        slot.val = sv[0]
      end
    else
      local err = kind ~= DEFAULT and "case " .. i .. " is not a case (use weft.recv, weft.send, weft.default)"
          or default and "more than one default case"
      if err then
        free_cases(sc, m)
        return nil, "weft.select: " .. err
      end
      default = true
    end
  end
  local k = C.weft_lua_select(sc, m, default and 1 or 0)
  if k >= 0 then return true, select_done(k, sc, k, rv, nested, ...) end
  if not nested then busy = false end
  if k == SEL_NONE then return true, run_default(...) end
  if k == SEL_BLOCK then
    if nested then
      C.weft_lua_drop()
      return nil, "cannot block here: " .. block_context()
    end
    repeat -- (SEL_BLOCK again: woken to select anew, the cases still held)
      block(3)
      busy = true
      k = C.weft_lua_select_finish(res)
      if k == SEL_BLOCK then busy = false end
    until k ~= SEL_BLOCK
    return true, select_done(k, res, 0, rv, nested, ...)
  end
  if k == SEL_NOTG then
    free_cases(sc, m)
    return nil, "weft.select: not inside a goroutine (start one with weft.run)"
  end
  free_cases(sc, m)
  return nil, "weft.select: bad cases (" .. k .. ")"
end

local function select_result(nested, ok, ...)
  if ok == nil then
    if not nested then busy = false end
    error((...), 3)
  end
  return ...
end

function weft.select(...)
  local n = select("#", ...)
  if busy then
    return select_result(true, select_with(ffi.new("weft_lua_case[?]", n), ffi.new("weft_lua_case[1]"),
      ffi.new("weft_lua_val[1]"), ffi.new("weft_lua_val[1]"), true, n, ...))
  end
  if n > SCN then
    SCN = 2 * n
    SC = ffi.new("weft_lua_case[?]", SCN)
  end
  busy = true
  return select_result(false, select_with(SC, RES, SV, RV, false, n, ...))
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

-- ---- atomics and sync ----------------------------------------------------------------
-- weft.atomic(n) is a shared 64-bit integer cell (engine/atomic.c) used
-- through FFI calls that traces compile. Values are Lua numbers that are
-- integers: exact within +-2^53 (what a double holds); a value beyond that
-- (reached by adding) reads back rounded to the nearest double. A
-- non-integer argument raises. Passed by reference, like channels.

local MAX_EXACT = 2 ^ 53
local function check_int(v, what)
  if type(v) ~= "number" or v % 1 ~= 0 or v > MAX_EXACT or v < -MAX_EXACT then
    error("weft.atomic: " .. what .. " must be an integer within 2^53, got " .. tostring(v), 3)
  end
end

local Atomic = {}
function Atomic:load() return C.weft_lua_atomic_load(self) end
function Atomic:store(v) check_int(v, "value"); C.weft_lua_atomic_store(self, v) end
function Atomic:add(d)
  if d == nil then d = 1 else check_int(d, "delta") end
  return C.weft_lua_atomic_add(self, d)
end
function Atomic:swap(v) check_int(v, "value"); return C.weft_lua_atomic_swap(self, v) end
function Atomic:cas(old, new)
  check_int(old, "old"); check_int(new, "new")
  return C.weft_lua_atomic_cas(self, old, new) ~= 0
end
local atomic_mt = core.atomic_mt
atomic_mt.__index = Atomic
atomic_mt.__tostring = function(a) return "weft.atomic(" .. a:load() .. ")" end

function weft.atomic(n)
  if n == nil then n = 0 end
  check_int(n, "n")
  return core.atomic(n)
end

-- The sync objects' methods live in weft.sync, loaded on first use: an
-- object received in a VM that has not loaded it yet loads it then.
for _, mt in pairs(core.sync_mts) do
  mt.__index = function(self, k)
    require "weft.sync"
    local index = mt.__index
    if type(index) == "table" then return index[k] end
  end
end

-- ---- user coroutines inside goroutines ------------------------------------------------

-- Resumes co; while it asks to park (OP/YIELD), parks this goroutine too
-- and resumes co again once woken, or with CANNOT where this goroutine
-- cannot yield (co then drops its operation and raises "cannot block here").
local function pass_up(co, ok, first, ...)
  if ok and (first == OP or first == YIELD) and select("#", ...) == 0
      and co_status(co) == "suspended" then
    local can = pcall(co_yield, first)
    return pass_up(co, co_resume(co, (not can) and first == OP and CANNOT or nil))
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

-- ---- submodules loaded on first use (weft.context, weft.sync, weft.errgroup, weft.io) --

local lazy = { context = "weft.context", sync = "weft.sync", errgroup = "weft.errgroup",
               io = "weft.io" }
setmetatable(weft, {
  __index = function(t, k)
    local name = lazy[k]
    if not name then return nil end
    local m = require(name)
    rawset(t, k, m)
    return m
  end,
})

return weft
