-- weft.atomic and weft.sync: the rules of each object, misuse messages, and
-- stress across goroutines and isolates on two processors. Nothing here
-- waits by sleeping: goroutines meet on channels, wait groups and atomics.
local weft = require "weft"
local async = require "weft.busted"
local sync = require "weft.sync"

local function run(fn, ...)
  return weft.run({ procs = 2 }, fn, ...)
end

-- Runs fn(i) in n isolates (weft.spawn) and waits for all of them.
local function spawn_n(n, fn)
  local wg = sync.waitgroup()
  wg:add(n)
  for i = 1, n do
    weft.spawn(function()
      fn(i)
      wg:done()
    end)
  end
  wg:wait()
end

describe("weft.atomic", function()
  it("loads, stores, adds, swaps and compares-and-swaps", function()
    local a = weft.atomic(5)
    assert.are.equal(5, a:load())
    assert.are.equal(8, a:add(3))
    assert.are.equal(7, a:add(-1))
    assert.are.equal(7, a:swap(10))
    assert.is_false(a:cas(7, 1))
    assert.is_true(a:cas(10, 1))
    a:store(-2 ^ 40)
    assert.are.equal(-2 ^ 40, a:load())
    assert.are.equal(0, weft.atomic():load())
  end)

  it("refuses values that are not integers", function()
    assert.has_error(function() weft.atomic(1.5) end,
      "weft.atomic: n must be an integer within 2^53, got 1.5")
    local a = weft.atomic(0)
    assert.has_error(function() a:add("x") end,
      "weft.atomic: delta must be an integer within 2^53, got x")
    assert.has_error(function() a:store(0 / 0) end)
  end)

  it("is shared by isolates on every processor", function()
    local total = run(function()
      local a = weft.atomic(0)
      spawn_n(4, function()
        for _ = 1, 20000 do a:add(1) end
        for _ = 1, 1000 do
          repeat local v = a:load() until a:cas(v, v + 2)
        end
      end)
      return a:load()
    end)
    assert.are.equal(4 * (20000 + 2000), total)
  end)

  it("travels on channels by reference", function()
    local v = run(function()
      local a, ch, done = weft.atomic(1), weft.chan(1), weft.chan()
      weft.spawn(function()
        local got = ch:recv()
        got:add(41)
        done:send(true)
      end)
      ch:send(a)
      done:recv()
      return a:load()
    end)
    assert.are.equal(42, v)
  end)
end)

describe("sync.waitgroup", function()
  it("waits for the counter to reach zero", function()
    local got = run(function()
      local wg, seen = sync.waitgroup(), 0
      wg:wait() -- zero: returns at once
      for _ = 1, 10 do
        wg:add(1)
        weft.go(function()
          weft.yield()
          seen = seen + 1
          wg:done()
        end)
      end
      wg:wait()
      return seen
    end)
    assert.are.equal(10, got)
  end)

  it("go(fn, ...) counts the goroutine it starts", function()
    local got = run(function()
      local wg, sum = sync.waitgroup(), 0
      for i = 1, 5 do wg:go(function(x) weft.yield(); sum = sum + x end, i) end
      wg:wait()
      return sum
    end)
    assert.are.equal(15, got)
  end)

  it("wakes every waiter, on every processor", function()
    local woke = run(function()
      local wg, start, n = sync.waitgroup(), sync.waitgroup(), weft.atomic(0)
      wg:add(1)
      start:add(6)
      local all = sync.waitgroup()
      all:add(6)
      for i = 1, 6 do
        local body = function()
          start:done()
          wg:wait()
          n:add(1)
          all:done()
        end
        if i % 2 == 0 then weft.spawn(body) else weft.go(body) end
      end
      start:wait()
      wg:done()
      all:wait()
      return n:load()
    end)
    assert.are.equal(6, woke)
  end)

  it("raises on a negative counter and stays usable", async(function()
    local wg = sync.waitgroup()
    assert.has_error(function() wg:done() end, "sync: negative WaitGroup counter")
    assert.has_error(function() wg:add(-3) end, "sync: negative WaitGroup counter")
    wg:add(2)
    wg:done()
    wg:done()
    wg:wait()
  end))
end)

describe("sync.mutex", function()
  it("locks, unlocks and trylocks", async(function()
    local m = sync.mutex()
    assert.is_true(m:trylock())
    assert.is_false(m:trylock())
    m:unlock()
    m:lock()
    assert.is_false(m:trylock())
    m:unlock()
    assert.has_error(function() m:unlock() end, "sync: unlock of unlocked mutex")
    m:lock() -- still consistent after the misuse
    m:unlock()
  end))

  it("hands the lock to waiters in the order they came", function()
    local order = weft.run({ procs = 1 }, function()
      local m, order, wg = sync.mutex(), {}, sync.waitgroup()
      m:lock()
      for i = 1, 5 do
        wg:go(function()
          m:lock()
          order[#order + 1] = i
          m:unlock()
        end)
        weft.yield() -- it runs up to its park
      end
      m:unlock()
      wg:wait()
      return order
    end)
    assert.are.same({ 1, 2, 3, 4, 5 }, order)
  end)

  it("excludes goroutines and isolates on two processors", function()
    local local_n, shared_n = run(function()
      local m, n = sync.mutex(), 0
      local wg = sync.waitgroup()
      for _ = 1, 50 do
        wg:go(function()
          for j = 1, 100 do
            m:lock()
            local x = n
            if j % 3 == 0 then weft.yield() end
            n = x + 1
            m:unlock()
          end
        end)
      end
      wg:wait()
      -- Isolates: a plain load then store is only right under the lock.
      local cell = weft.atomic(0)
      spawn_n(4, function()
        for j = 1, 2000 do
          m:lock()
          local x = cell:load()
          if j % 50 == 0 then weft.yield() end
          cell:store(x + 1)
          m:unlock()
        end
      end)
      return n, cell:load()
    end)
    assert.are.equal(5000, local_n)
    assert.are.equal(8000, shared_n)
  end)

  it("raises 'cannot block here' where Lua cannot yield, and stays consistent", async(function()
    local m = sync.mutex()
    m:lock()
    local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
      m:lock()
      return a < b
    end)
    assert.is_false(ok)
    assert.matches("cannot block here: table.sort comparator", err)
    m:unlock()
    m:lock() -- the helper that stood in for the comparator let go
    m:unlock()
  end))
end)

describe("sync.rwmutex", function()
  it("lets readers in together and keeps writers alone", async(function()
    local rw = sync.rwmutex()
    rw:rlock()
    rw:rlock() -- a second reader does not wait
    assert.is_false(rw:trylock())
    rw:runlock()
    rw:runlock()
    assert.is_true(rw:trylock())
    assert.is_false(rw:tryrlock())
    rw:unlock()
    assert.is_true(rw:tryrlock())
    rw:runlock()
  end))

  it("raises on misuse", async(function()
    local rw = sync.rwmutex()
    assert.has_error(function() rw:runlock() end, "sync: RUnlock of unlocked RWMutex")
    assert.has_error(function() rw:unlock() end, "sync: Unlock of unlocked RWMutex")
    rw:lock()
    assert.has_error(function() rw:runlock() end, "sync: RUnlock of unlocked RWMutex")
    rw:unlock()
    rw:rlock()
    rw:runlock()
  end))

  it("readers never see a writer inside, across isolates", function()
    local bad, writes = run(function()
      local rw = sync.rwmutex()
      local readers, writer, bad, writes = weft.atomic(0), weft.atomic(0), weft.atomic(0), weft.atomic(0)
      spawn_n(6, function(i)
        for j = 1, 1500 do
          if (i + j) % 5 == 0 then
            rw:lock()
            if writer:add(1) ~= 1 or readers:load() ~= 0 then bad:add(1) end
            if j % 2 == 0 then weft.yield() end
            writes:add(1)
            writer:add(-1)
            rw:unlock()
          else
            rw:rlock()
            readers:add(1)
            if writer:load() ~= 0 then bad:add(1) end
            if j % 3 == 0 then weft.yield() end
            readers:add(-1)
            rw:runlock()
          end
        end
      end)
      return bad:load(), writes:load()
    end)
    assert.are.equal(0, bad)
    assert.are.equal(6 * 300, writes)
  end)

  it("does not starve a writer behind a stream of readers", function()
    local got_in = run(function()
      local rw, stop, inside = sync.rwmutex(), weft.atomic(0), weft.atomic(0)
      local wg = sync.waitgroup()
      -- Overlapping readers: there is always one inside while they loop.
      for _ = 1, 4 do
        wg:go(function()
          for _ = 1, 20000 do
            if stop:load() ~= 0 then break end
            rw:rlock()
            inside:add(1)
            weft.yield()
            inside:add(-1)
            rw:runlock()
          end
        end)
      end
      while inside:load() == 0 do weft.yield() end
      rw:lock()
      stop:store(1)
      local alone = inside:load() == 0
      rw:unlock()
      wg:wait()
      return alone
    end)
    assert.is_true(got_in)
  end)
end)

describe("sync.once", function()
  it("runs fn once across goroutines and processors", function()
    local calls, seen_done = run(function()
      local once, calls, release = sync.once(), weft.atomic(0), weft.chan()
      local finished, late = weft.atomic(0), weft.atomic(0)
      local function body()
        once:run(function()
          release:recv() -- the others must wait until this returns
          calls:add(1)
          finished:store(1)
        end)
        if finished:load() == 0 then late:add(1) end
      end
      local wg = sync.waitgroup()
      for _ = 1, 10 do wg:go(body) end
      wg:add(4)
      for _ = 1, 4 do
        weft.spawn(function() body(); wg:done() end)
      end
      release:send(true)
      wg:wait()
      return calls:load(), late:load() == 0
    end)
    assert.are.equal(1, calls)
    assert.is_true(seen_done)
  end)

  it("counts a raising fn as done", async(function()
    local once, n = sync.once(), 0
    assert.has_error(function() once:run(function() n = n + 1; error("boom", 0) end) end, "boom")
    once:run(function() n = n + 1 end)
    assert.are.equal(1, n)
  end))
end)

describe("sync.cond", function()
  it("waits for a condition under its mutex; signal wakes one, broadcast all", function()
    local got = run(function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local queue, woke = {}, 0
      local wg = sync.waitgroup()
      for _ = 1, 5 do
        wg:go(function()
          m:lock()
          while #queue == 0 do c:wait() end
          table.remove(queue, 1)
          woke = woke + 1
          m:unlock()
        end)
      end
      weft.yield()
      m:lock()
      queue[1] = "a"
      c:signal()
      m:unlock()
      while woke < 1 do weft.yield() end
      m:lock()
      for i = 1, 4 do queue[i] = i end
      c:broadcast()
      m:unlock()
      wg:wait()
      return woke
    end)
    assert.are.equal(5, got)
  end)

  it("works across isolates and refuses a wait without the lock", function()
    local n = run(function()
      local m = sync.mutex()
      local c = sync.cond(m)
      local ready = weft.atomic(0)
      local done = sync.waitgroup()
      done:add(3)
      for _ = 1, 3 do
        weft.spawn(function()
          m:lock()
          while ready:load() == 0 do c:wait() end
          m:unlock()
          done:done()
        end)
      end
      m:lock()
      ready:store(1)
      c:broadcast()
      m:unlock()
      done:wait()
      assert.has_error(function() c:wait() end, "sync: unlock of unlocked mutex")
      c:signal() -- nothing registered is left behind
      return ready:load()
    end)
    assert.are.equal(1, n)
    assert.has_error(function() sync.cond({}) end,
      "sync.cond: the locker must be a sync.mutex or sync.rwmutex")
  end)
end)

describe("sync.semaphore", function()
  it("acquires, releases and try_acquires units", async(function()
    local s = sync.semaphore(3)
    assert.is_true(s:try_acquire(2))
    assert.is_false(s:try_acquire(2))
    s:acquire()
    assert.are.equal(0, s:available())
    s:release(3)
    assert.has_error(function() s:release() end, "sync: semaphore released more than held")
    assert.has_error(function() s:acquire(4) end, "sync: semaphore acquire of more than its size")
    assert.has_error(function() sync.semaphore(-1) end)
    assert.are.equal(3, s:available())
  end))

  it("serves a large request before later small ones", function()
    local order = weft.run({ procs = 1 }, function()
      local s, order, wg = sync.semaphore(4), {}, sync.waitgroup()
      s:acquire(4)
      wg:go(function() s:acquire(3); order[#order + 1] = "big" end)
      weft.yield()
      wg:go(function() s:acquire(1); order[#order + 1] = "small" end)
      weft.yield()
      s:release(2) -- enough for small, not big: nobody goes
      weft.yield()
      assert.are.same({}, order)
      assert.is_false(s:try_acquire(1))
      s:release(2)
      wg:wait()
      return order
    end)
    assert.are.same({ "big", "small" }, order)
  end)

  it("never admits more than its size, across isolates", function()
    local peak, over, left = run(function()
      local s = sync.semaphore(5)
      local inuse, peak, over = weft.atomic(0), weft.atomic(0), weft.atomic(0)
      spawn_n(6, function(i)
        for j = 1, 1500 do
          local k = 1 + (i * 7 + j) % 3
          if j % 4 == 0 then
            if not s:try_acquire(k) then k = nil end
          else
            s:acquire(k)
          end
          if k then
            local now = inuse:add(k)
            if now > 5 then over:add(1) end
            local p = peak:load()
            while now > p and not peak:cas(p, now) do p = peak:load() end
            if j % 2 == 0 then weft.yield() end
            inuse:add(-k)
            s:release(k)
          end
        end
      end)
      return peak:load(), over:load(), s:available()
    end)
    assert.are.equal(0, over)
    assert.is_true(peak <= 5 and peak >= 1)
    assert.are.equal(5, left)
  end)
end)

describe("weft.sync", function()
  it("is the weft.sync module, and its objects travel on channels", function()
    assert.are.equal(sync, weft.sync)
    local n = run(function()
      local ch, m, wg = weft.chan(2), sync.mutex(), sync.waitgroup()
      wg:add(1)
      local n = weft.atomic(0)
      weft.spawn(function()
        local mm, ww = ch:recv(), ch:recv()
        mm:lock()
        n:add(1)
        mm:unlock()
        ww:done()
      end)
      ch:send(m)
      ch:send(wg)
      wg:wait()
      return n:load(), tostring(m):match("^sync.mutex: ") ~= nil
    end)
    assert.are.equal(1, n)
  end)
end)
