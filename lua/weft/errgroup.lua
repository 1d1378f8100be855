-- weft.errgroup: a group of goroutines working on subtasks of one task, as
-- Go's golang.org/x/sync/errgroup.
--
--   errgroup.new([parent]) -> g, ctx   ctx is cancelled by the first failure,
--                                      or when wait returns
--   g:go(fn, ...)       runs fn(...) in a goroutine (weft.go: shares memory)
--   g:spawn(fn, ...)    runs fn(...) in an isolate (weft.spawn: any processor)
--   g:limit(n)          at most n tasks at once (n < 0: no limit); go/spawn
--                       block until a slot is free
--   g:trygo(fn, ...)    go, unless the limit is reached: -> true | false
--   g:wait()            waits for every task, then -> the first error | nil
--
-- A task fails when it raises or returns nil, err. The first failure is what
-- wait returns and it cancels ctx, with that error as its cause
-- (context.cause(ctx)). An error that cannot be copied across VMs is
-- reported as tostring(err).
--
-- Everything a task touches to report back is a channel (engine objects pass
-- by reference), so spawned tasks on other processors report to the group:
--   done   each finished task sends one value; wait receives them
--   errc   capacity 1: the first failure to fit in it wins
--   sem    capacity n (with a limit): a task holds a slot while it runs
-- The group table itself belongs to the goroutines that share its memory
-- (its creator's isolate): call go/spawn/wait from there, not from inside a
-- spawned task (which would get a copy).

local weft = require "weft"
local context = require "weft.context"

local errgroup = {}

local Group = {}
Group.__index = Group

local type, pcall, error, tostring, setmetatable = type, pcall, error, tostring, setmetatable
local wselect, wsend, wrecv, wdefault = weft.select, weft.send, weft.recv, weft.default

-- Finished tasks that are not waited for yet may sit here without parking.
local DONE_BUFFER = 64

function errgroup.new(parent)
  if parent ~= nil and not context.is_context(parent) then
    error("errgroup.new: parent must be a context, got " .. type(parent), 2)
  end
  local ctx, cancel = context.with_cancel(parent or context.background())
  local g = setmetatable({
    _ctx = ctx, _cancel = cancel, _pending = 0,
    _done = weft.chan(DONE_BUFFER), _errc = weft.chan(1), _sem = nil,
  }, Group)
  return g, ctx
end

local function try_put(errc, err)
  return wselect(wsend(errc, err), wdefault()) == 1
end

-- Records err if it is the group's first failure; the first one cancels ctx.
local function fail(errc, cancel, err)
  if err == nil then err = "nil error" end
  local ok, won = pcall(try_put, errc, err)
  if not ok then -- err cannot be copied: its text travels instead
    err = tostring(err)
    won = try_put(errc, err)
  end
  if won then cancel(err) end
end

-- Runs one task and reports. Module level, so weft.spawn sends it by name.
function errgroup._run(fn, done, errc, sem, cancel, ...)
  local ok, r1, r2 = pcall(fn, ...)
  if not ok then
    fail(errc, cancel, r1)
  elseif r1 == nil and r2 ~= nil then
    fail(errc, cancel, r2)
  end
  if sem then sem:recv() end
  done:send(true)
end
local run = errgroup._run

local function check_fn(fn, what)
  if type(fn) ~= "function" then
    error("errgroup: " .. what .. ": fn must be a function, got " .. type(fn), 3)
  end
end

function Group:go(fn, ...)
  check_fn(fn, "go")
  local sem = self._sem
  if sem then sem:send(true) end
  self._pending = self._pending + 1
  weft.go(run, fn, self._done, self._errc, sem, self._cancel, ...)
end

function Group:spawn(fn, ...)
  check_fn(fn, "spawn")
  local sem = self._sem
  if sem then sem:send(true) end
  local ok, err = pcall(weft.spawn, run, fn, self._done, self._errc, sem, self._cancel, ...)
  if not ok then
    if sem then sem:recv() end
    error(err, 2)
  end
  self._pending = self._pending + 1
end

function Group:trygo(fn, ...)
  check_fn(fn, "trygo")
  local sem = self._sem
  if sem and wselect(wsend(sem, true), wdefault()) ~= 1 then return false end
  self._pending = self._pending + 1
  weft.go(run, fn, self._done, self._errc, sem, self._cancel, ...)
  return true
end

function Group:limit(n)
  if type(n) ~= "number" or n % 1 ~= 0 then
    error("errgroup: limit: n must be a whole number, got " .. tostring(n), 2)
  end
  local sem = self._sem
  if sem and #sem ~= 0 then
    error(("errgroup: modify limit while %d goroutines in the group are still active"):format(#sem), 2)
  end
  self._sem = n >= 0 and weft.chan(n) or nil
end

function Group:wait()
  local done = self._done
  while self._pending > 0 do
    done:recv()
    self._pending = self._pending - 1
  end
  if self._err == nil then
    local _, err = wselect(wrecv(self._errc), wdefault())
    self._err = err
  end
  self._cancel(self._err)
  return self._err
end

return errgroup
