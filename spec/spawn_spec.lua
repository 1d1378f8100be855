-- Isolated goroutines (weft.spawn): one VM per processor, copies of the
-- function and its arguments, parallel execution, and errors.
local weft = require "weft"
local async = require "weft.busted"

local function run(fn, ...)
  return weft.run({ procs = 2 }, fn, ...)
end

describe("weft.spawn", function()
  it("runs two isolates at the same time on two processors", function()
    -- Each raises its own flag, then spins (never yielding) until it sees
    -- the other's: on one processor the first to run would spin alone
    -- until its deadline.
    for _ = 1, 5 do
      local ok1, ok2 = run(function()
        local a, b, out = weft.chan(1), weft.chan(1), weft.chan(2)
        local function worker(mine, theirs, done)
          local weft = require "weft"
          mine:send(true)
          local deadline = weft.now() + 10
          while #theirs == 0 do
            if weft.now() > deadline then done:send(false) return end
          end
          done:send(true)
        end
        weft.spawn(worker, a, b, out)
        weft.spawn(worker, b, a, out)
        return out:recv(), out:recv()
      end)
      assert.is_true(ok1)
      assert.is_true(ok2)
    end
  end)

  it("copies the arguments and upvalues; the copies are the isolate's own", function()
    local outer, got = run(function()
      local t = { n = 1, inner = { 1, 2 } }
      local back = weft.chan()
      weft.spawn(function(arg, out)
        arg.n = arg.n + 100
        t.inner[1] = "changed"
        out:send({ arg.n, t.inner[1] })
      end, t, back)
      return t, back:recv()
    end)
    assert.are.equal(1, outer.n)
    assert.are.equal(1, outer.inner[1])
    assert.are.same({ 101, "changed" }, got)
  end)

  it("keeps cycles and metatables in arguments", function()
    local got = run(function()
      local mt = { __index = function(_, k) return k .. "!" end }
      local t = setmetatable({}, mt)
      t.self = t
      local back = weft.chan()
      weft.spawn(function(x, out)
        out:send({ x.self == x, x.hello, getmetatable(x) ~= nil })
      end, t, back)
      return back:recv()
    end)
    assert.are.same({ true, "hello!", true }, got)
  end)

  it("keeps global writes inside the isolate; go inside it shares its memory", function()
    local leaked, got = run(function()
      local back = weft.chan()
      weft.spawn(function(out)
        local weft = require "weft"
        spawned_global = 0
        local done = weft.chan()
        for i = 1, 10 do
          weft.go(function() spawned_global = spawned_global + i; done:send(true) end)
        end
        for _ = 1, 10 do done:recv() end
        out:send(spawned_global)
      end, back)
      local v = back:recv()
      return rawget(_G, "spawned_global"), v
    end)
    assert.is_nil(leaked)
    assert.are.equal(55, got)
  end)

  it("stops while isolates wait on channels that only their VMs hold", function()
    -- Each isolate parks goroutines of its VM on its own channels (send,
    -- receive, buffered, select), which the engine's stop withdraws after
    -- the VMs that held the channels have closed. Under `make asan` a
    -- channel freed before its waiters were withdrawn is reported.
    for _ = 1, 10 do
      local parked = run(function()
        local ready, n = weft.chan(64), 4
        for _ = 1, n do
          weft.spawn(function(out)
            local weft = require "weft"
            local a, b, full, empty = weft.chan(), weft.chan(), weft.chan(1), weft.chan(4)
            full:send(0)
            weft.go(function() out:send(1); a:send("x") end)
            weft.go(function() out:send(1); b:recv() end)
            weft.go(function() out:send(1); full:send(1) end)
            weft.go(function() out:send(1); weft.select(weft.recv(empty), weft.send(b, {1})) end)
            out:send(1)
            a:recv()
            a:recv() -- a second time: no sender left
          end, ready)
        end
        local got = 0
        for _ = 1, 5 * n do got = got + ready:recv() end
        return got
      end)
      assert.are.equal(20, parked)
    end
  end)

  it("spreads many isolates over the processors, losing none", function()
    local total, procs = run(function()
      local out = weft.chan(64)
      local n = 200
      for i = 1, n do
        weft.spawn(function(k, o) o:send({ k, require("weft_core").id() }) end, i, out)
      end
      local seen, sum = {}, 0
      for _ = 1, n do
        local r = out:recv()
        assert(not seen[r[1]], "duplicate")
        seen[r[1]] = true
        sum = sum + r[1]
      end
      return sum, weft.procs()
    end)
    assert.are.equal(200 * 201 / 2, total)
    assert.are.equal(2, procs)
  end)

  it("copies the user globals the function reads, on every processor", function()
    local got = run(function()
      spawn_spec_config = { factor = 3 }
      function spawn_spec_scale(x) return x * spawn_spec_config.factor end
      local out = weft.chan(8)
      for i = 1, 8 do
        weft.spawn(function(k, o) o:send(spawn_spec_scale(k)) end, i, out)
      end
      local sum = 0
      for _ = 1, 8 do sum = sum + out:recv() end
      spawn_spec_config, spawn_spec_scale = nil, nil
      return sum
    end)
    assert.are.equal(3 * 36, got)
  end)

  it("sends module values by name: string.format, math.floor, pairs, lpeg", function()
    local got = run(function()
      local lpeg = require "lpeg"
      local digits = lpeg.C(lpeg.R("09") ^ 1)
      local fmt, floor = string.format, math.floor
      local out = weft.chan(4)
      for i = 1, 4 do
        weft.spawn(function(k, o)
          -- the pattern is userdata: it is built here, from the module
          local p = lpeg.P("n=") * lpeg.C(lpeg.R("09") ^ 1)
          local n = 0
          for _ in pairs({ a = 1, b = 2 }) do n = n + 1 end
          o:send(fmt("%d:%s:%d", k, p:match("n=" .. floor(k * 10.7)), n))
        end, i, out)
      end
      local got = {}
      for _ = 1, 4 do got[#got + 1] = out:recv() end
      table.sort(got)
      assert(digits:match("42") == "42")
      return got
    end)
    assert.are.same({ "1:10:2", "2:21:2", "3:32:2", "4:42:2" }, got)
  end)

  it("finds modules through the spawner's package.path, set after the engine started", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir) == 0 or true)
    local f = assert(io.open(dir .. "/spawn_spec_mod.lua", "w"))
    f:write("return { twice = function(x) return 2 * x end }")
    f:close()
    local saved = package.path
    local got = run(function()
      package.path = dir .. "/?.lua;" .. package.path
      local m = require "spawn_spec_mod"
      local out = weft.chan(4)
      for i = 1, 4 do weft.spawn(function(k) out:send(m.twice(k)) end, i) end
      local sum = 0
      for _ = 1, 4 do sum = sum + out:recv() end
      return sum
    end)
    package.path, package.loaded.spawn_spec_mod = saved, nil
    os.remove(dir .. "/spawn_spec_mod.lua")
    os.remove(dir)
    assert.are.equal(20, got)
  end)

  it("builds the same tables from table constructors as the function does at home", function()
    -- The codec puts back the keys that bytecode drops from constructor
    -- templates (see TEMPLATES_SRC in bindings/codec.c); a key whose value
    -- is nil must still be absent, in interpreted and in compiled code.
    local function build(n)
      local none = nil
      local function nothing() return nil end
      local function desc(t)
        local keys, parts = {}, {}
        for k in pairs(t) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do
          local v = t[k]
          parts[#parts + 1] = k .. "=" .. (type(v) == "table" and desc(v) or tostring(v))
        end
        return "{" .. table.concat(parts, ",") .. "}"
      end
      local s = {}
      for i = 1, n do
        local a = { id = i, name = "n" .. i, gone = none, also = nothing(), ok = true }
        a.later = i * 2
        local b = { x = i, y = { z = i, w = nothing() } }
        local c = (function(v) return { v = v, k = "const", maybe = v % 2 == 0 and v or nil } end)(i)
        s[#s + 1] = desc(a) .. desc(b) .. desc(c)
      end
      return table.concat(s, ";")
    end
    local home = build(300)
    assert.matches("^{id=1,later=2,name=n1,ok=true}{x=1,y={z=1}}{k=const,v=1};", home)
    for _ = 1, 3 do
      local away = run(function()
        local c = weft.chan(1)
        weft.spawn(function(ch, n) ch:send(build(n)) end, c, 300)
        return c:recv()
      end)
      assert.are.equal(home, away)
    end
  end)

  it("builds the same tables as at home from constructors whose register or keys change later", function()
    -- Keys put back into templates have nil values: whatever the stores
    -- after a constructor are (conditional, into a register that now holds
    -- another table, keys removed again, metatables, varargs, multiple
    -- returns), what the tables hold must not change.
    local function build(n, ...)
      local function nothing() return nil end
      local function two() return 1, 2 end
      local function desc(t, seen)
        seen = seen or {}
        if seen[t] then return "<again>" end
        seen[t] = true
        local keys, parts, count = {}, {}, 0
        for k in pairs(t) do keys[#keys + 1] = k; count = count + 1 end
        table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
        for _, k in ipairs(keys) do
          local v = t[k]
          parts[#parts + 1] = tostring(k) .. "=" .. (type(v) == "table" and desc(v, seen) or tostring(v))
        end
        return "{" .. table.concat(parts, ",") .. "|#" .. #t .. "|n" .. count .. "}"
      end
      local s = {}
      for i = 1, n do
        local a = { x = i }
        if i % 2 == 0 then a.even = i end
        a.y = nothing()
        local b = { k = nothing(), ... }
        local c = { two() }
        local d = { p = two(), q = i, two() }
        local e = { z = i }
        e = setmetatable({}, { __index = function(_, k) return "idx" .. k end })
        e.w = i -- the register now holds a table from a call
        local f = { m = i, gone = nothing() }
        f.m = nil
        local g = { __index = nothing(), v = i }
        local obj = setmetatable({}, g)
        local g2 = { v = i }
        g2.__index = g2
        local obj2 = setmetatable({}, g2)
        local h = {}
        for j = 1, 3 do
          local r = { j = j, o = nothing() }
          h[j] = r
        end
        local cyc = { me = nothing() }
        cyc.me = cyc
        local inner = (function(v)
          local t = { w = v }
          if v % 3 == 0 then t.three = true end
          return t
        end)(i)
        s[#s + 1] = desc(a) .. desc(b) .. desc(c) .. desc(d) .. desc(e) .. e.foo .. desc(f) ..
          tostring(obj.v) .. tostring(obj2.v) .. desc(h) .. desc(cyc) .. desc(inner)
      end
      return table.concat(s, ";")
    end
    local home = build(300, "va1", nil, "va3")
    assert.matches("^{x=1|#0|n1}{1=va1,3=va3|#1|n2}{1=1,2=2|#2|n2}{1=1,2=2,p=1,q=1|#2|n4}", home)
    local away = run(function()
      local c = weft.chan(1)
      weft.spawn(function(ch, n) ch:send(build(n, "va1", nil, "va3")) end, c, 300)
      return c:recv()
    end)
    assert.are.equal(home, away)
  end)

  it("builds constructors' tables unchanged where jit.vmdef cannot be loaded", function()
    -- Without it the codec leaves templates as loaded (LUA_PATH without
    -- the default path: isolates do not find jit/vmdef.lua).
    local script = [[
      local weft = require "weft"
      local function build(n)
        local s = {}
        for i = 1, n do
          local t = { id = i, name = "n" .. i, none = nil }
          t.later = i
          local k = 0
          for _ in pairs(t) do k = k + 1 end
          s[#s + 1] = k .. t.name .. t.later
        end
        return table.concat(s, ",")
      end
      local away, found = weft.run({ procs = 2 }, function()
        local c = weft.chan(1)
        weft.spawn(function(ch) ch:send({ build(100), (pcall(require, "jit.vmdef")) }) end, c)
        local r = c:recv()
        return r[1], r[2]
      end)
      print("same=" .. tostring(away == build(100)) .. " vmdef=" .. tostring(found))
    ]]
    assert(not script:find("'", 1, true))
    local p = io.popen("LUA_PATH='lua/?.lua;lua/?/init.lua' build/weft -e '" .. script .. "' 2>&1")
    local out = p:read("*a")
    p:close()
    assert.matches("same=true vmdef=false", out)
  end)

  it("rebinds _G to the isolate's environment", function()
    local leaked, got = run(function()
      local G = _G
      local out = weft.chan()
      weft.spawn(function(o)
        G.spawn_spec_via_G = "inside"
        o:send(spawn_spec_via_G)
      end, out)
      return rawget(_G, "spawn_spec_via_G"), out:recv()
    end)
    assert.is_nil(leaked)
    assert.are.equal("inside", got)
  end)

  it("reports an error in an isolate as an error in that goroutine", function()
    local ok, err = pcall(run, function()
      local done = weft.chan()
      weft.spawn(function() error("boom in isolate") end)
      done:recv()
    end)
    assert.is_false(ok)
    assert.matches("error in goroutine %d+: .*boom in isolate", err)
  end)

  it("refuses what cannot be copied, at once, naming it", async(function()
    local co = coroutine.create(print)
    local ok, err = pcall(weft.spawn, function() return co end)
    assert.is_false(ok)
    assert.matches("cannot copy upvalue 'co' %(thread%) of function at .*spawn_spec.lua:%d+", err)
    spawn_spec_proxy = newproxy()
    ok, err = pcall(weft.spawn, function() return spawn_spec_proxy end)
    spawn_spec_proxy = nil
    assert.is_false(ok)
    assert.matches("cannot copy global 'spawn_spec_proxy' %(userdata%)", err)
    assert.has_error(function() weft.spawn("not a function") end,
      "weft.spawn: fn must be a function, got string")
  end))
end)
