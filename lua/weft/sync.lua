-- weft.sync: wait groups, mutexes, read/write mutexes, once, conditions and
-- semaphores for goroutines, on every processor.
--
-- Built the way Go's sync package is: each object is a few atomic int64
-- words and engine semaphores (engine/sema.c) in one reference counted C
-- block (bindings/sync.c), and the algorithms below run on them through FFI
-- calls. Blocking parks the goroutine on an engine semaphore (never the
-- processor's thread); the semaphores are FIFO with direct hand-off. Each
-- object is a userdata handle: sent on a channel or captured by weft.spawn,
-- it is the same object in the other isolate, on any processor.
--
-- The algorithms
--   mutex      a counter of lockers (0 free, 1 locked, 1+n locked with n
--              waiting). lock: CAS 0 -> 1, else add 1 and, unless that made
--              it 1, wait on the semaphore; unlock: CAS 1 -> 0, else
--              decrement and hand the lock to the first waiter (release 1).
--              Hand-off makes it FIFO-fair: a waiter is never overtaken, at
--              the cost of Go's barging throughput under heavy contention.
--   rwmutex    Go's sync.RWMutex: readerCount (minus 2^30 while a writer is
--              pending), readerWait (readers the pending writer waits for),
--              a writer semaphore, a reader semaphore and a mutex between
--              writers. A pending writer makes new readers wait, so writers
--              are not starved by a stream of readers.
--   waitgroup  Go's: one word counter * 2^24 + waiters; add wakes every
--              waiter when the counter reaches zero.
--   once       Go's: a done word read first, then a mutex and a second check.
--   cond       a count of registered waiters and a semaphore: wait registers,
--              unlocks, acquires, relocks; signal takes one registration and
--              releases one unit, broadcast takes them all.
--   semaphore  an engine semaphore of n units, with n as its limit:
--              releasing more units than are held (n minus available) raises
--              "sync: semaphore released more than held"; acquiring more
--              than n raises "sync: semaphore acquire of more than its size".
--
-- Where Lua cannot yield, an operation that would block raises "cannot
-- block here: <context>". If that is found only after the object counted
-- the goroutine as a waiter, a helper goroutine takes its place in the
-- queue and undoes the operation when served, so the object stays
-- consistent.

local core = require "weft_core"
local weft = require "weft"
local ffi = require "ffi"

local C = ffi.C
local co_yield = coroutine.yield
local OP, CANNOT = core.OP, core.CANNOT
local type, error, pcall, floor = type, error, pcall, math.floor
local load, store, add, cas = C.weft_lua_sync_load, C.weft_lua_sync_store, C.weft_lua_sync_add,
    C.weft_lua_sync_cas
local sema_acquire, sema_finish = C.weft_lua_sema_acquire, C.weft_lua_sema_finish
local sema_release, sema_tryacquire = C.weft_lua_sema_release, C.weft_lua_sema_tryacquire
local cannot_block_here, can_yield = weft._cannot_block, weft._can_yield

-- Kinds (bindings/sync.c), FFI results, wait reasons.
local MUTEX, RWMUTEX, WAITGROUP, ONCE, COND, SEMAPHORE = 0, 1, 2, 3, 4, 5
local DONE, BLOCK, NOTG = 0, 2, 4
local R_MUTEX, R_RLOCK, R_LOCK, R_WG, R_COND, R_SEMA = 1, 2, 3, 4, 5, 6

local sync = {}

-- ---- the semaphore under it all ------------------------------------------------

-- Takes k units of semaphore si of o, parking the goroutine until it can.
-- undo(o): what to do in a helper goroutine, once served, when this
-- goroutine turns out unable to block after o already counted it.
local function acquire(o, si, k, reason, undo, what)
  local rc = sema_acquire(o, si, k, reason)
  if rc == DONE then return end
  if rc == BLOCK then
    if not can_yield() or co_yield(OP) == CANNOT then
      weft.go(function()
        acquire(o, si, k, reason)
        if undo then undo(o) end
      end)
      cannot_block_here(3)
    end
    sema_finish()
    return
  end
  if rc == NOTG then
    error("sync." .. what .. ": not inside a goroutine (start one with weft.run)", 3)
  end
  error("sync." .. what .. ": bad count " .. tostring(k), 3)
end

local function check_can_block(level)
  if not can_yield() then cannot_block_here(level + 1) end
end

-- ---- mutex (words: wi; semaphore: si) ----------------------------------------------

local function unlock_at(o, wi, si)
  if cas(o, wi, 1, 0) ~= 0 then return true end
  while true do
    local n = load(o, wi)
    if n <= 0 then return false end
    if cas(o, wi, n, n - 1) ~= 0 then
      sema_release(o, si, 1) -- hands the lock to the first waiter
      return true
    end
  end
end

local function lock_at(o, wi, si, reason, undo, what)
  if cas(o, wi, 0, 1) ~= 0 then return end
  if add(o, wi, 1) == 1 then return end -- freed meanwhile
  acquire(o, si, 1, reason, undo, what)
end

local Mutex = {}
local function mutex_undo(m) unlock_at(m, 0, 0) end

function Mutex:lock()
  if cas(self, 0, 0, 1) ~= 0 then return end
  lock_at(self, 0, 0, R_MUTEX, mutex_undo, "mutex.lock")
end

function Mutex:unlock()
  if cas(self, 0, 1, 0) ~= 0 then return end
  if not unlock_at(self, 0, 0) then error("sync: unlock of unlocked mutex", 2) end
end

function Mutex:trylock()
  return cas(self, 0, 0, 1) ~= 0
end

function sync.mutex() return core.sync_new(MUTEX) end

-- ---- rwmutex ----------------------------------------------------------------------
-- Words: 0 readerCount, 1 readerWait, 2 the writers' mutex. Semaphores:
-- 0 writerSem, 1 readerSem, 2 the writers' mutex.

local MAX_READERS = 2 ^ 30
local RWMutex = {}

local function runlock_slow(rw, r)
  if r + 1 == 0 or r + 1 == -MAX_READERS then
    add(rw, 0, 1) -- undo: the object stays as it was
    error("sync: RUnlock of unlocked RWMutex", 3)
  end
  if add(rw, 1, -1) == 0 then sema_release(rw, 0, 1) end -- the last reader lets the writer in
end

local function runlock(rw)
  local r = add(rw, 0, -1)
  if r < 0 then runlock_slow(rw, r) end
end

local function unlock(rw)
  local r = add(rw, 0, MAX_READERS)
  if r >= MAX_READERS then
    add(rw, 0, -MAX_READERS)
    error("sync: Unlock of unlocked RWMutex", 3)
  end
  if r > 0 then sema_release(rw, 1, r) end -- the readers that waited for us
  unlock_at(rw, 2, 2)
end

local function writers_undo(rw) unlock_at(rw, 2, 2) end

function RWMutex:rlock()
  if add(self, 0, 1) < 0 then
    acquire(self, 1, 1, R_RLOCK, runlock, "rwmutex.rlock") -- a writer is pending
  end
end

function RWMutex:runlock()
  local r = add(self, 0, -1)
  if r < 0 then runlock_slow(self, r) end
end

function RWMutex:lock()
  lock_at(self, 2, 2, R_LOCK, writers_undo, "rwmutex.lock")
  -- Announce the writer, then wait for the readers already in.
  local r = add(self, 0, -MAX_READERS) + MAX_READERS
  if r ~= 0 and add(self, 1, r) ~= 0 then
    acquire(self, 0, 1, R_LOCK, unlock, "rwmutex.lock")
  end
end

function RWMutex:unlock()
  local r = add(self, 0, MAX_READERS)
  if r >= MAX_READERS then
    add(self, 0, -MAX_READERS)
    error("sync: Unlock of unlocked RWMutex", 2)
  end
  if r > 0 then sema_release(self, 1, r) end
  unlock_at(self, 2, 2)
end

function RWMutex:trylock()
  if cas(self, 2, 0, 1) == 0 then return false end
  if cas(self, 0, 0, -MAX_READERS) == 0 then
    unlock_at(self, 2, 2)
    return false
  end
  return true
end

function RWMutex:tryrlock()
  while true do
    local c = load(self, 0)
    if c < 0 then return false end
    if cas(self, 0, c, c + 1) ~= 0 then return true end
  end
end

function sync.rwmutex() return core.sync_new(RWMUTEX) end

-- ---- waitgroup (word 0: counter * 2^24 + waiters; semaphore 0) ---------------------

local SHIFT = 2 ^ 24
local MAX_COUNTER = 2 ^ 28
local WaitGroup = {}

local function wg_add(wg, delta, level)
  local st = add(wg, 0, delta * SHIFT)
  local v = floor(st / SHIFT)
  local w = st - v * SHIFT
  if v < 0 or v > MAX_COUNTER then
    add(wg, 0, -delta * SHIFT) -- undo
    error(v < 0 and "sync: negative WaitGroup counter" or "sync: WaitGroup counter overflow", level + 1)
  end
  if v > 0 or w == 0 or delta == 0 then return end
  -- The counter reached zero with waiters: wake them all. A concurrent
  -- add or wait now would be a misuse (Go reports it the same way).
  if load(wg, 0) ~= st then
    error("sync: WaitGroup misuse: add called concurrently with wait", level + 1)
  end
  store(wg, 0, 0)
  sema_release(wg, 0, w)
end

function WaitGroup:add(n)
  if n == nil then n = 1 end
  if type(n) ~= "number" or n % 1 ~= 0 then
    error("sync.waitgroup.add: n must be an integer, got " .. tostring(n), 2)
  end
  wg_add(self, n, 2)
end

function WaitGroup:done() wg_add(self, -1, 2) end

function WaitGroup:wait()
  while true do
    local st = load(self, 0)
    if st < SHIFT then return end -- counter 0 (negative is refused by add)
    if cas(self, 0, st, st + 1) ~= 0 then
      acquire(self, 0, 1, R_WG, nil, "waitgroup.wait")
      return
    end
  end
end

-- Starts fn(...) in a new goroutine (go semantics) counted by the group.
function WaitGroup:go(fn, ...)
  if type(fn) ~= "function" then
    error("sync.waitgroup.go: fn must be a function, got " .. type(fn), 2)
  end
  wg_add(self, 1, 2)
  local wg = self
  return weft.go(function(...)
    fn(...)
    wg_add(wg, -1, 1)
  end, ...)
end

function sync.waitgroup() return core.sync_new(WAITGROUP) end

-- ---- once (words: 0 done, 1 mutex; semaphore 0: mutex) ------------------------------

local Once = {}
local function once_undo(o) unlock_at(o, 1, 0) end

local function once_finish(o, ok, ...)
  store(o, 0, 1) -- done even if fn raised, as in Go
  unlock_at(o, 1, 0)
  if not ok then error((...), 0) end
end

function Once:run(fn)
  if load(self, 0) ~= 0 then return end
  if type(fn) ~= "function" then
    error("sync.once.run: fn must be a function, got " .. type(fn), 2)
  end
  lock_at(self, 1, 0, R_MUTEX, once_undo, "once.run")
  if load(self, 0) ~= 0 then
    unlock_at(self, 1, 0)
    return
  end
  once_finish(self, pcall(fn))
end

function Once:done() return load(self, 0) ~= 0 end

function sync.once() return core.sync_new(ONCE) end

-- ---- cond (word 0: registered waiters; semaphore 0) ---------------------------------

local Cond = {}
local lockers = setmetatable({}, { __mode = "k" })

local function locker(c)
  local l = lockers[c]
  if not l then
    l = core.sync_link(c)
    lockers[c] = l
  end
  return l
end

-- Gives up one registration (no signal took it yet), else consumes the
-- unit a signal released for it, in a helper goroutine.
local function cond_unregister(c)
  while true do
    local n = load(c, 0)
    if n == 0 then
      weft.go(function() acquire(c, 0, 1, R_COND) end)
      return
    end
    if cas(c, 0, n, n - 1) ~= 0 then return end
  end
end

function Cond:wait()
  check_can_block(2)
  local l = locker(self)
  add(self, 0, 1)
  local ok, err = pcall(l.unlock, l)
  if not ok then
    cond_unregister(self)
    error(err, 2)
  end
  acquire(self, 0, 1, R_COND, nil, "cond.wait")
  l:lock()
end

function Cond:signal()
  while true do
    local n = load(self, 0)
    if n == 0 then return end
    if cas(self, 0, n, n - 1) ~= 0 then
      sema_release(self, 0, 1)
      return
    end
  end
end

function Cond:broadcast()
  while true do
    local n = load(self, 0)
    if n == 0 then return end
    if cas(self, 0, n, 0) ~= 0 then
      sema_release(self, 0, n)
      return
    end
  end
end

function Cond:locker() return locker(self) end

function sync.cond(l)
  local ok, c = pcall(core.sync_new, COND, l)
  if not ok then error("sync.cond: the locker must be a sync.mutex or sync.rwmutex", 2) end
  lockers[c] = l
  return c
end

-- ---- semaphore (semaphore 0, limited to its size) -----------------------------------

local Semaphore = {}

local function units(k, what)
  if k == nil then return 1 end
  if type(k) ~= "number" or k % 1 ~= 0 or k < 0 then
    error("sync.semaphore." .. what .. ": k must be a whole number, got " .. tostring(k), 3)
  end
  return k
end

local function sema_undo_for(k)
  return function(s) sema_release(s, 0, k) end
end

function Semaphore:acquire(k)
  k = units(k, "acquire")
  local rc = sema_tryacquire(self, 0, k)
  if rc == DONE then return end
  if rc ~= 6 then error("sync: semaphore acquire of more than its size", 2) end
  check_can_block(2)
  acquire(self, 0, k, R_SEMA, sema_undo_for(k), "semaphore.acquire")
end

function Semaphore:release(k)
  k = units(k, "release")
  if sema_release(self, 0, k) ~= DONE then
    error("sync: semaphore released more than held", 2)
  end
end

function Semaphore:try_acquire(k)
  k = units(k, "try_acquire")
  return sema_tryacquire(self, 0, k) == DONE
end

function Semaphore:available() return core.sync_count(self) end

function sync.semaphore(n)
  if type(n) ~= "number" or n % 1 ~= 0 or n < 0 or n > 2 ^ 53 then
    error("sync.semaphore: n must be a whole number, got " .. tostring(n), 2)
  end
  return core.sync_new(SEMAPHORE, n)
end

-- ---- the methods of every object, in every VM ------------------------------------------

local methods = {
  [MUTEX] = Mutex, [RWMUTEX] = RWMutex, [WAITGROUP] = WaitGroup,
  [ONCE] = Once, [COND] = Cond, [SEMAPHORE] = Semaphore,
}
local names = {
  [MUTEX] = "mutex", [RWMUTEX] = "rwmutex", [WAITGROUP] = "waitgroup",
  [ONCE] = "once", [COND] = "cond", [SEMAPHORE] = "semaphore",
}
for kind, mt in pairs(core.sync_mts) do
  mt.__index = methods[kind]
  local name = "sync." .. names[kind]
  mt.__tostring = function(o)
    return name .. ": " .. (tostring(ffi.cast("void **", o)[0]):match("0x%x+") or "?")
  end
end

return sync
