-- Lua goroutines on the native scheduler: weft.run, go, channels, select,
-- timers, user coroutines inside goroutines, and the errors of the contract.
local weft = require "weft"
local async = require "weft.busted"

local function run(fn, ...)
  return weft.run({ procs = 2 }, fn, ...)
end

describe("weft.run", function()
  it("returns main's results and passes its arguments", function()
    local a, b, c = run(function(x, y) return x + y, "two", nil end, 1, 2)
    assert.are.equal(3, a)
    assert.are.equal("two", b)
    assert.is_nil(c)
  end)

  it("can run again after it returned, and main is goroutine 1", function()
    for _ = 1, 3 do
      assert.are.equal(1, run(function() return weft.id() end))
    end
  end)

  it("raises an uncaught error of any goroutine with its id", function()
    local ok, err = pcall(run, function()
      weft.go(function() error("boom") end)
      weft.sleep(5)
    end)
    assert.is_false(ok)
    assert.matches("^error in goroutine 2: .*boom", err)
    assert.matches("stack traceback", err)
  end)

  it("ends when main returns, even with goroutines blocked", function()
    local n = run(function()
      local c = weft.chan()
      for _ = 1, 100 do weft.go(function() c:recv() end) end
      weft.yield()
      return weft.count()
    end)
    assert.are.equal(101, n)
  end)

  it("inside a goroutine simply calls main", function()
    assert.are.equal(10, run(function() return weft.run(function(x) return x * 2 end, 5) end))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() weft.run({ procs = 0 }, function() end) end,
      "weft.run: opts.procs must be a positive whole number, got 0")
    assert.has_error(function() weft.run({}, 42) end, "weft.run: main must be a function, got number")
  end)
end)

describe("goroutines", function()
  it("share memory with their creator (go)", function()
    local total = run(function()
      local shared = { n = 0 }
      local done = weft.chan()
      for i = 1, 100 do
        weft.go(function(k) shared.n = shared.n + k; done:send(true) end, i)
      end
      for _ = 1, 100 do done:recv() end
      return shared.n
    end)
    assert.are.equal(5050, total)
  end)

  it("get their own function and arguments when goroutines are reused", function()
    local got = run(function()
      local out = weft.chan(64)
      local sum = 0
      for round = 1, 20 do
        for i = 1, 50 do
          weft.go(function(a, b) out:send(a * 1000 + b) end, round, i)
        end
        local seen = {}
        for _ = 1, 50 do
          local v = out:recv()
          assert.is_nil(seen[v]); seen[v] = true
          assert.are.equal(round, math.floor(v / 1000))
          sum = sum + v % 1000
        end
      end
      return sum
    end)
    assert.are.equal(20 * (50 * 51 / 2), got)
  end)

  it("report id, count, procs and now", async(function()
    assert.are.equal(1, weft.id())
    assert.are.equal(1, weft.count())
    assert.are.equal(2, weft.procs())
    local t0 = weft.now()
    weft.sleep(0.02)
    assert.is_true(weft.now() - t0 >= 0.02)
  end))

  it("interleave with yield", function()
    local log = run(function()
      local log = {}
      local done = weft.chan(2)
      for id = 1, 2 do
        weft.go(function()
          for _ = 1, 3 do log[#log + 1] = id; weft.yield() end
          done:send(true)
        end)
      end
      done:recv(); done:recv()
      return log
    end)
    assert.are.same({ 1, 2, 1, 2, 1, 2 }, log)
  end)
end)

describe("channels", function()
  it("hand values over unbuffered, in order", function()
    local got = run(function()
      local c = weft.chan()
      weft.go(function() for i = 1, 1000 do c:send(i) end c:close() end)
      local got = {}
      for v in c:range() do got[#got + 1] = v end
      return got
    end)
    assert.are.equal(1000, #got)
    for i = 1, 1000 do assert.are.equal(i, got[i]) end
  end)

  it("buffer up to their capacity: len, cap and #", async(function()
    local c = weft.chan(3)
    assert.are.equal(3, c:cap())
    c:send("a"); c:send(true); c:send(2.5)
    assert.are.equal(3, c:len())
    assert.are.equal(3, #c)
    assert.are.equal("a", (c:recv()))
    assert.are.equal(true, (c:recv()))
    assert.are.equal(2.5, (c:recv()))
    assert.are.equal(0, #c)
  end))

  it("copy strings with any bytes", function()
    local s = run(function()
      local c = weft.chan(1)
      c:send("a\0b" .. string.rep("x", 100000))
      return c:recv()
    end)
    assert.are.equal("a\0b" .. string.rep("x", 100000), s)
  end)

  it("copy tables deeply, keeping cycles, shared parts and metatables", function()
    local got, orig = run(function()
      local mt = { __index = function(_, k) return "default " .. k end }
      local shared = { 1, 2, 3 }
      local t = setmetatable({ a = shared, b = shared, nested = { deep = { "x" } } }, mt)
      t.self = t
      local c = weft.chan(1)
      c:send(t)
      local got = c:recv()
      shared[1] = 99 -- the copy must not see this
      return got, t
    end)
    assert.are_not.equal(orig, got)
    assert.are.equal(got, got.self)
    assert.are.equal(got.a, got.b)
    assert.are.same({ 1, 2, 3 }, got.a)
    assert.are.equal("x", got.nested.deep[1])
    assert.are.equal("default zzz", got.zzz)
  end)

  it("copy plain tables of every shape, small and large, exactly", function()
    local values = {
      {}, { 1 }, { true, false }, { [1.5] = "x", [-3] = "y", [true] = 0 },
      { a = { b = { c = { d = { e = { f = 1 } } } } } }, -- deeper than the plain path goes
      { s = ("z"):rep(300), list = { 1, 2, 3, { 4 } } },
      (function() local t = {} for i = 1, 12 do t[i] = { i } end return t end)(), -- many tables
      { n = 0 / 0 ~= 0 / 0, big = 2 ^ 60, neg = -0.25 },
      { id = 7, name = "item7", pos = { 3.5, 10.5, 17.5 }, ok = true },
    }
    local got = run(function()
      local c = weft.chan(#values)
      for _, v in ipairs(values) do c:send(v) end
      local out = {}
      for i = 1, #values do out[i] = c:recv() end
      return out
    end)
    assert.are.same(values, got)
    for i, v in ipairs(values) do assert.are_not.equal(v, got[i]) end
  end)

  it("pass channels by reference and copy functions with their upvalues", function()
    local answer = run(function()
      local reply = weft.chan()
      local requests = weft.chan(1)
      local base = 40
      requests:send({ reply = reply, f = function(x) return x + base end })
      weft.go(function()
        local req = requests:recv()
        req.reply:send(req.f(2))
      end)
      return reply:recv()
    end)
    assert.are.equal(42, answer)
  end)

  it("keep int64 cdata as such", function()
    local v = run(function()
      local c = weft.chan(1)
      c:send(123456789012345678LL)
      return c:recv()
    end)
    assert.are.equal("cdata", type(v))
    assert.is_true(v == 123456789012345678LL)
  end)

  it("refuse what cannot be copied, naming it", async(function()
    local c = weft.chan(1)
    local ok, err = pcall(c.send, c, { co = coroutine.create(function() end) })
    assert.is_false(ok)
    assert.matches("cannot copy thread", err)
    assert.are.equal(0, #c)
  end))

  it("follow Go's close semantics", async(function()
    local c = weft.chan(2)
    c:send(1)
    c:close()
    local v, ok = c:recv()
    assert.are.equal(1, v); assert.is_true(ok)
    v, ok = c:recv()
    assert.is_nil(v); assert.is_false(ok)
    assert.has_error(function() c:send(2) end, "send on closed channel")
    assert.has_error(function() c:close() end, "close of closed channel")
  end))

  it("refuse nil", async(function()
    assert.has_error(function() weft.chan(1):send(nil) end, "send of nil value")
  end))

  it("wake blocked senders and receivers on close", function()
    local r = run(function()
      local r, s = weft.chan(), weft.chan()
      local out = weft.chan(10)
      for _ = 1, 5 do weft.go(function() local _, ok = r:recv(); out:send(ok) end) end
      for _ = 1, 5 do
        weft.go(function()
          local _, err = pcall(s.send, s, 1)
          out:send(err)
        end)
      end
      weft.sleep(0.01)
      r:close()
      s:close()
      local r = {}
      for _ = 1, 10 do r[#r + 1] = tostring(out:recv()) end
      table.sort(r)
      return table.concat(r, ",")
    end)
    assert.matches("false,false,false,false,false", r)
    assert.are.equal(5, select(2, r:gsub("send on closed channel", "")))
  end)

  it("move many values between many goroutines without loss", function()
    local sum, n = run(function()
      local c, done = weft.chan(16), weft.chan()
      for p = 1, 8 do
        weft.go(function() for i = 1, 1000 do c:send(p * 10000 + i) end done:send(0) end)
      end
      local sum, n = 0, 0
      weft.go(function() for v in c:range() do sum = sum + v; n = n + 1 end done:send(1) end)
      for _ = 1, 8 do done:recv() end
      c:close()
      done:recv()
      return sum, n
    end)
    local want = 0
    for p = 1, 8 do for i = 1, 1000 do want = want + p * 10000 + i end end
    assert.are.equal(8000, n)
    assert.are.equal(want, sum)
  end)
end)

describe("channel operations run from finalizers", function()
  it("use buffers of their own: the interrupted operation's value is intact", function()
    jit.flush(); jit.off() -- in the interpreter finalizers run at many more points
    local armed = true
    local ok, bad = pcall(run, function()
      local a, pool = weft.chan(1), weft.chan(100000)
      for i = 1, 100000 do pool:send("pooled value number " .. i) end
      local wrong = 0
      for i = 1, 3000 do
        local p = newproxy(true)
        getmetatable(p).__gc = function()
          if not armed then return end
          pool:recv()
          pool:send({ token = i }) -- a plain table too
        end
        a:send("outer value number " .. i)
        local v = a:recv()
        if v ~= "outer value number " .. i then wrong = wrong + 1 end
        a:send({ outer = i })
        v = a:recv()
        if type(v) ~= "table" or v.outer ~= i then wrong = wrong + 1 end
      end
      armed = false
      return wrong
    end)
    armed = false
    jit.on()
    assert(ok, bad)
    assert.are.equal(0, bad)
  end)

  it("refuse a method called on something that is not a channel", function()
    local ch
    run(function() ch = weft.chan(1) end)
    assert.has_error(function() ch.send({}, 1) end,
      "bad argument #1 to 'send' (weft.chan expected, got table)")
    assert.has_error(function() ch.recv(io.stdout) end,
      "bad argument #1 to 'recv' (weft.chan expected, got userdata)")
  end)
end)

describe("engine stop", function()
  it("frees a blocked select's value exactly once when a receiver took it", function()
    for _ = 1, 20 do
      run(function()
        local ch = weft.chan()
        weft.go(function() weft.select(weft.send(ch, ("x"):rep(100))) end)
        weft.yield()
        assert.are.equal(100, #ch:recv()) -- main returns before the sender runs again
      end)
    end
  end)

  it("reports an error object whose __tostring raises", function()
    for _ = 1, 3 do
      local ok, err = pcall(run, function()
        error(setmetatable({}, { __tostring = function() error("nested") end }))
      end)
      assert.is_false(ok)
      assert.matches("error in goroutine 1: %(error object is not a string%)", err)
    end
  end)
end)

describe("select", function()
  it("returns the index and the received value, or calls the handler", async(function()
    local a, b = weft.chan(1), weft.chan(1)
    b:send("x")
    local i, v, ok = weft.select(weft.recv(a), weft.recv(b))
    assert.are.equal(2, i); assert.are.equal("x", v); assert.is_true(ok)
    b:send("y")
    assert.are.equal("got y", weft.select(weft.recv(a), weft.recv(b, function(v2) return "got " .. v2 end)))
    assert.are.equal(1, weft.select(weft.send(a, 5)))
    assert.are.equal(5, (a:recv()))
    assert.are.equal("sent", weft.select(weft.send(b, 6, function() return "sent" end), weft.recv(a)))
  end))

  it("never blocks with a default, and never chooses a nil channel", async(function()
    local c = weft.chan()
    assert.are.equal(3, weft.select(weft.recv(c), weft.recv(nil), weft.default()))
    assert.are.equal("d", weft.select(weft.send(nil, 1), weft.default(function() return "d" end)))
  end))

  it("chooses uniformly among ready cases", function()
    local hits = run(function()
      local a, b = weft.chan(1), weft.chan(1)
      local hits = { 0, 0 }
      for _ = 1, 4000 do
        if #a == 0 then a:send(1) end
        if #b == 0 then b:send(2) end
        local i = weft.select(weft.recv(a), weft.recv(b))
        hits[i] = hits[i] + 1
      end
      return hits
    end)
    -- 4000 fair coin flips: outside 1800..2200 has probability < 1e-9
    assert.is_true(hits[1] > 1800 and hits[1] < 2200, hits[1] .. " vs " .. hits[2])
  end)

  it("reports a closed channel to a receive case", async(function()
    local c = weft.chan()
    weft.go(function() c:close() end)
    local i, v, ok = weft.select(weft.recv(c))
    assert.are.equal(1, i); assert.is_nil(v); assert.is_false(ok)
  end))

  it("wakes a select parked on a buffered channel with a value, or with its close", async(function()
    -- The waker wins the select before it looks at the buffer; a close finds
    -- no value there, so the select runs again and reports the close.
    local c, never, done = weft.chan(4), weft.chan(), weft.chan(2)
    local function waiter()
      done:send({ weft.select(weft.recv(c), weft.recv(never)) })
    end
    weft.go(waiter)
    weft.yield()
    c:send(42)
    assert.are.same({ 1, 42, true }, done:recv())
    weft.go(waiter)
    weft.yield()
    assert.are.equal(0, #done)
    c:close()
    assert.are.same({ 1, nil, false }, done:recv())
  end))

  it("sends every kind of value and frees the cases not taken", async(function()
    local full, open = weft.chan(1), weft.chan(4)
    full:send(0)
    local long = ("v"):rep(1000)
    local values = { 1.5, true, false, "short", long, { k = long }, 2LL }
    for _, v in ipairs(values) do
      local k = weft.select(weft.send(full, long), weft.send(open, v))
      assert.are.equal(2, k)
      local got = open:recv()
      if type(v) == "table" then assert.are.same(v, got) else assert.are.equal(v, got) end
    end
    assert.are.equal(0, full:recv())
  end))

  it("frees the values already encoded when a later case cannot be copied", async(function()
    local c = weft.chan(1)
    assert.has_error(function()
      weft.select(weft.send(c, ("a"):rep(100)), weft.send(c, coroutine.create(print)))
    end)
    assert.are.equal(0, #c)
  end))

  it("rejects a case whose channel is not a channel", async(function()
    assert.has_error(function() weft.recv(io.stdout) end,
      "weft.recv: ch must be a channel or nil, got userdata")
    assert.has_error(function() weft.send({}, 1) end,
      "weft.send: ch must be a channel or nil, got table")
  end))

  it("rejects things that are not cases", async(function()
    assert.has_error(function() weft.select(42) end,
      "weft.select: case 1 is not a case (use weft.recv, weft.send, weft.default)")
  end))
end)

describe("timers", function()
  it("after delivers the time once, not early", async(function()
    local t0 = weft.now()
    local v = weft.after(0.02):recv()
    assert.is_true(v - t0 >= 0.02)
  end))

  it("a timer stopped or reset delivers no stale value", async(function()
    local t = weft.timer(0.01)
    weft.sleep(0.03) -- fired, value buffered
    assert.is_false(t:stop())
    assert.are.equal(2, weft.select(weft.recv(t.c), weft.default()))
    local u = weft.timer(0.01)
    weft.sleep(0.03)
    u:reset(0.05)
    local t0 = weft.now()
    local v = u.c:recv()
    assert.is_true(v - t0 >= 0.04)
  end))

  it("a ticker ticks and drops ticks for a slow receiver", async(function()
    local tk = weft.ticker(0.005)
    weft.sleep(0.05)
    assert.are.equal(1, #tk.c)
    tk:stop()
  end))

  it("after_func runs its function in a new goroutine", function()
    local id = run(function()
      local c = weft.chan()
      weft.after_func(0.01, function() c:send(weft.id()) end)
      return c:recv()
    end)
    assert.is_true(id > 1)
  end)

  it("selecting against weft.after in a loop stays flat in memory", async(function()
    local c = weft.chan(1)
    -- Twice: a channel's userdata has a finalizer, and an object with one
    -- is freed by the cycle after the one that finalizes it.
    collectgarbage()
    collectgarbage()
    local before = collectgarbage("count")
    for i = 1, 20000 do
      c:send(i)
      weft.select(weft.recv(c), weft.recv(weft.after(60)))
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(collectgarbage("count") - before < 512)
  end))
end)

describe("blocking where Lua cannot yield", function()
  it("raises in a table.sort comparator and a gsub callback", async(function()
    local c = weft.chan()
    assert.has_error(function()
      table.sort({ 3, 1, 2 }, function(x, y) c:recv() return x < y end)
    end, "cannot block here: table.sort comparator")
    local ok, err = pcall(string.gsub, "abc", "%w", function() weft.sleep(0.01) end)
    assert.is_false(ok)
    assert.matches("cannot block here: string.gsub callback", err)
  end))

  it("raises at the top level of a required chunk and in __gc", async(function()
    local c = weft.chan()
    package.preload["spec_blocks_at_load"] = function() c:recv() end
    local ok, err = pcall(require, "spec_blocks_at_load")
    assert.is_false(ok)
    assert.matches("cannot block here: top level of a required chunk", err)
    local seen
    local p = newproxy(true)
    getmetatable(p).__gc = function() seen = select(2, pcall(c.recv, c)) end
    p = nil
    collectgarbage()
    collectgarbage()
    assert.matches("cannot block here: __gc metamethod", seen)
  end))

  it("points at the caller's line, for every blocking call", async(function()
    local c = weft.chan()
    local calls = {
      function() c:recv() end, function() c:send(1) end,
      function() for _ in c:range() do end end,
      function() weft.select(weft.recv(c)) end, function() weft.sleep(1) end,
    }
    for i, call in ipairs(calls) do
      local ok, err = pcall(table.sort, { 2, 1 }, function(a, b) call() return a < b end)
      assert.is_false(ok)
      assert.matches("^spec/weft_spec%.lua:%d+: cannot block here: table.sort comparator$", err,
        nil, false, "call " .. i)
    end
  end))

  it("raises inside a user coroutine resumed where the goroutine cannot yield", async(function()
    local c = weft.chan()
    local err
    table.sort({ 2, 1 }, function(x, y)
      local co = coroutine.create(function() return c:recv() end)
      local ok, e = coroutine.resume(co)
      if not ok then err = e end
      return x < y
    end)
    assert.matches("cannot block here", err)
    -- The dropped receive left nothing queued: a sender still blocks
    -- until a real receiver comes.
    weft.go(function() c:send("after") end)
    assert.are.equal("after", c:recv())
  end))

  it("drops the value of a send that cannot wait, and the cases of a select", async(function()
    local c = weft.chan()
    for _ = 1, 100 do
      assert.has_error(function()
        table.sort({ 2, 1 }, function(x, y) c:send(("x"):rep(100)) return x < y end)
      end, "cannot block here: table.sort comparator")
      assert.has_error(function()
        table.sort({ 2, 1 }, function(x, y)
          weft.select(weft.send(c, ("y"):rep(100)), weft.send(c, { 1, 2 }))
          return x < y
        end)
      end, "cannot block here: table.sort comparator")
    end
    assert.are.equal(0, #c)
    weft.go(function() c:send("z") end)
    assert.are.equal("z", c:recv())
  end))

  it("knows where Lua can yield as coroutine.isyieldable does, without calling it", async(function()
    local ffi = require "ffi"
    local function check(where)
      -- -1 would mean "not known here": this LuaJIT's layout is the one read.
      local r = ffi.C.weft_lua_can_yield()
      assert.are_not.equal(-1, r, where)
      assert.are.equal(coroutine.isyieldable(), r == 1, where)
      assert.are.equal(coroutine.isyieldable(), weft._can_yield(), where)
      return r
    end
    assert.are.equal(1, check("goroutine"))
    table.sort({ 2, 1 }, function(a, b) check("comparator") return a < b end)
    local c = weft.chan()
    local co = coroutine.create(function()
      assert.are.equal(1, check("coroutine"))
      table.sort({ 2, 1 }, function(a, b) check("comparator in a coroutine") return a < b end)
      local ok, err = pcall(table.sort, { 2, 1 }, function(a, b) c:recv() return a < b end)
      assert.is_false(ok)
      assert.matches("cannot block here: table.sort comparator", err)
      coroutine.yield("paused")
      check("coroutine resumed again")
      return "done"
    end)
    assert.are.same({ true, "paused" }, { coroutine.resume(co) })
    check("goroutine, after the coroutine yielded")
    assert.are.same({ true, "done" }, { coroutine.resume(co) })
    check("goroutine, after the coroutine ended")
    -- And in a goroutine of another VM: a spawned one reports what it saw.
    local out = weft.chan(1)
    weft.spawn(function(out)
      local ffi = require "ffi"
      local top = ffi.C.weft_lua_can_yield()
      local inner
      table.sort({ 2, 1 }, function(a, b) inner = ffi.C.weft_lua_can_yield() return a < b end)
      out:send({ top, inner })
    end, out)
    assert.are.same({ 1, 0 }, out:recv())
  end))

  it("does not raise when the operation need not wait", async(function()
    local c = weft.chan(1)
    c:send(1)
    table.sort({ 3, 1, 2 }, function(x, y) if #c > 0 then c:recv() end return x < y end)
  end))
end)

describe("native goroutines", function()
  it("exchange values with Lua goroutines over the same channels", function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "void checksum_stage(void *arg);")
    local stage = ffi.load("build/examples/native_stage.so")
    local sums = run(function()
      local input, output = weft.chan(), weft.chan()
      local id = weft.go_native(stage.checksum_stage, input, output)
      assert.is_true(id > 1)
      weft.go(function()
        for _, s in ipairs({ "a", "abc", "Wikipedia", 7 }) do input:send(s) end
        input:close()
      end)
      local r = {}
      for v in output:range() do r[#r + 1] = v end
      return r
    end)
    -- Adler-32 of "a", "abc", "Wikipedia"; -1 for what is not a string
    assert.are.same({ 0x00620062, 0x024d0127, 0x11E60398, -1 }, sums)
  end)

  it("refuse what is not a C function", async(function()
    assert.has_error(function() weft.go_native(print) end,
      "weft.go_native: cfunc must be a C function (cdata), got function")
  end))
end)

describe("user coroutines inside goroutines", function()
  it("can block inside a generator; the goroutine parks and resumes", function()
    local got = run(function()
      local c = weft.chan()
      weft.go(function() for i = 1, 5 do c:send(i) end c:close() end)
      local gen = coroutine.wrap(function()
        for v in c:range() do coroutine.yield(v * 10) end
      end)
      local got = {}
      for _ = 1, 5 do got[#got + 1] = gen() end
      return got
    end)
    assert.are.same({ 10, 20, 30, 40, 50 }, got)
  end)

  it("keep plain coroutine semantics", async(function()
    local co = coroutine.create(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
    assert.are.same({ true, 2 }, { coroutine.resume(co, 1) })
    assert.are.same({ true, 20 }, { coroutine.resume(co, 10) })
    assert.are.equal("dead", coroutine.status(co))
  end))
end)
