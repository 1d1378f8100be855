-- weft.transfer: packing a function and its arguments for another VM (the
-- isolate of weft.spawn). There is no second VM from Lua yet, so the specs
-- unpack into a fresh environment in this VM: values are still encoded and
-- decoded, so what is copied is a copy, and what travels by name comes back
-- as the very same object.
local transfer = require "weft.transfer"
local weft = require "weft"
local lpeg = require "lpeg"

local function fresh_env()
  return setmetatable({}, { __index = _G })
end

-- pack, then unpack into a fresh environment: env, fn, args...
local function roundtrip(fn, ...)
  local env = fresh_env()
  return env, transfer.unpack(transfer.pack(fn, ...), env)
end

-- "<file>:<line>" of a function, as messages name it.
local function at(f)
  local info = debug.getinfo(f, "S")
  return info.short_src .. ":" .. info.linedefined
end

local function err_of(fn, ...)
  local ok, err = pcall(transfer.pack, fn, ...)
  assert.is_false(ok)
  return err
end

-- err is "<position>: " followed by exactly want.
local function assert_message(want, err)
  assert.are.equal(want, err:sub(-#want))
  assert.matches("^[^:]+:%d+: ", err:sub(1, -#want - 1) .. " ")
end

describe("transfer.globals", function()
  it("lists the globals a function reads, not those it only writes", function()
    local g = transfer.globals(function(x)
      written_only = x
      return read_one, string.format(read_two)
    end)
    assert.are.same({ read_one = true, string = true, read_two = true }, g)
  end)

  it("follows nested functions, upvalues and captured global functions, cycles included", function()
    local function helper() return via_upvalue end
    tr_ping = function() return tr_pong, via_ping end
    tr_pong = function() return tr_ping, via_pong end
    local g = transfer.globals(function()
      local inner = function() return function() return nested_deep end end
      return helper, inner, tr_ping
    end)
    tr_ping, tr_pong = nil, nil
    assert.are.same({
      via_upvalue = true, nested_deep = true, tr_ping = true, tr_pong = true, via_ping = true,
      via_pong = true,
    }, g)
  end)

  it("does not look into functions that travel by name", function()
    assert.are.same({ string = true }, transfer.globals(function() return string.format end))
    assert.are.same({}, transfer.globals(print))
  end)
end)

describe("transfer.pack and unpack", function()
  it("copy the function and its arguments, nils included", function()
    local env, fn, a, b, c, d = roundtrip(function(x, y) return x + y end, 1, nil, "s", nil)
    assert.are.equal(3, fn(1, 2))
    assert.are.equal(env, getfenv(fn))
    assert.are.equal(1, a)
    assert.is_nil(b)
    assert.are.equal("s", c)
    assert.is_nil(d)
    local n = select("#", transfer.unpack(transfer.pack(print, 1, nil, nil), fresh_env()))
    assert.are.equal(4, n)
  end)

  it("copy tables: changing the copy leaves the original alone", function()
    local up = { n = 1 }
    tr_cfg = { n = 10 }
    local arg = { n = 100 }
    local env, fn, arg2 = roundtrip(function(t)
      up.n = up.n + 1; tr_cfg.n = tr_cfg.n + 1; t.n = t.n + 1
      return up.n, tr_cfg.n, t.n
    end, arg)
    local a, b, c = fn(arg2)
    tr_cfg = nil
    assert.are.same({ 2, 11, 101 }, { a, b, c })
    assert.are.equal(1, up.n)
    assert.are.equal(100, arg.n)
    assert.are_not.equal(arg, arg2)
    assert.are.equal(11, rawget(env, "tr_cfg").n)
  end)

  it("capture the globals read, through nested functions and functions in upvalues and globals", function()
    tr_a, tr_b, tr_c, tr_d = "a", "b", "c", "d"
    tr_fn = function() return tr_d end
    local function helper() return tr_b end
    local env, fn = roundtrip(function()
      local function nested() return tr_c end
      return tr_a, helper(), nested(), tr_fn()
    end)
    tr_a, tr_b, tr_c, tr_d, tr_fn = nil, nil, nil, nil, nil
    assert.are.same({ "a", "b", "c", "d" }, { fn() })
    assert.are.equal("a", rawget(env, "tr_a"))
    assert.are.equal(env, getfenv(rawget(env, "tr_fn")))
    assert.is_nil(rawget(env, "string"))
  end)

  it("capture the globals of functions taken along in tables and arguments", function()
    tr_x, tr_y = "x", "y"
    local handlers = { on = function() return tr_x end }
    local env, fn, cb = roundtrip(function(f) return handlers.on(), f() end, function() return tr_y end)
    tr_x, tr_y = nil, nil
    assert.are.same({ "x", "y" }, { fn(cb) })
    assert.are.equal("x", rawget(env, "tr_x"))
    assert.are.equal("y", rawget(env, "tr_y"))
  end)

  it("leave standard globals and globals only written to the destination", function()
    local env, fn = roundtrip(function() tr_out = tostring(12); return print, pairs end)
    local p, pr = fn()
    assert.are.equal(print, p)
    assert.are.equal(pairs, pr)
    assert.are.equal("12", rawget(env, "tr_out"))
    assert.is_nil(rawget(_G, "tr_out"))
    assert.is_nil(rawget(env, "print"))
  end)

  it("send module values by name: they arrive as the very same objects", function()
    local format, floor, P = string.format, math.floor, lpeg.P
    tr_out = io.stdout -- a userdata, reachable from the module io
    local _, fn, a1, a2 = roundtrip(function(m, match)
      return format, floor, P, pairs, lpeg, tr_out, m, match
    end, lpeg, lpeg.match)
    tr_out = nil
    local r = { fn(a1, a2) }
    assert.is_true(rawequal(string.format, r[1]))
    assert.is_true(rawequal(math.floor, r[2]))
    assert.is_true(rawequal(lpeg.P, r[3]))
    assert.is_true(rawequal(pairs, r[4]))
    assert.is_true(rawequal(lpeg, r[5]))
    assert.is_true(rawequal(io.stdout, r[6]))
    assert.is_true(rawequal(lpeg, r[7]))
    assert.is_true(rawequal(lpeg.match, r[8]))
    assert.are.equal(3, r[8](r[3]("ab"), "abc"))
  end)

  it("rebind _G, as an upvalue and as a global, to the destination environment", function()
    local G = _G
    local env, fn = roundtrip(function()
      G.tr_via_upvalue = 1
      _G.tr_via_global = 2
      return G, _G
    end)
    local g1, g2 = fn()
    assert.are.equal(env, g1)
    assert.are.equal(env, g2)
    assert.are.equal(1, rawget(env, "tr_via_upvalue"))
    assert.are.equal(2, rawget(env, "tr_via_global"))
    assert.is_nil(rawget(_G, "tr_via_upvalue"))
    assert.is_nil(rawget(_G, "tr_via_global"))
  end)

  it("give the environment to nested functions and closures made later", function()
    local function maker() return function() return tr_later end end
    local env, fn = roundtrip(function() return maker() end)
    local made = fn()
    env.tr_later = "env"
    assert.are.equal(env, getfenv(made))
    assert.are.equal("env", made())
  end)

  it("copy cycles, shared tables and metatables in arguments", function()
    local shared = { v = 1 }
    local t = setmetatable({ a = shared, b = shared }, { __index = function(_, k) return "mt:" .. k end })
    t.self = t
    local _, fn, t2, s2 = roundtrip(function(x, y) return x, y end, t, shared)
    assert.are_not.equal(t, t2)
    assert.are.equal(t2, t2.self)
    assert.are.equal(t2.a, t2.b)
    assert.are.equal(s2, t2.a)
    assert.are.equal("mt:zz", t2.zz)
    assert.is_function(fn)
  end)

  it("keep upvalues shared between the function and its arguments", function()
    local n = 0
    local function inc() n = n + 1 return n end
    local _, fn, inc2 = roundtrip(function(f) f() return n end, inc)
    assert.are.equal(1, fn(inc2))
    assert.are.equal(0, n)
  end)

  it("copy int64 cdata", function()
    local _, fn, a, b = roundtrip(function(x) return x + 1LL end, 2LL, 3ULL)
    assert.is_true(fn(a) == 3LL)
    assert.is_true(b == 3ULL)
    assert.are.equal("cdata", type(a))
  end)

  it("pass channels by reference", function()
    weft.run(function()
      local ch = weft.chan(1)
      local _, fn, ch2 = roundtrip(function(c) c:send("hello") end, ch)
      assert.are_not.equal(ch, ch2)
      fn(ch2)
      assert.are.equal("hello", (ch:recv()))
    end)
  end)

  it("consume a packed value once; pack_free frees one early", function()
    local p = transfer.pack(function() end)
    transfer.unpack(p, fresh_env())
    assert.has_error(function() transfer.unpack(p, fresh_env()) end, "packed value already unpacked")
    local q = transfer.pack(function() end, { 1, 2, 3 })
    require("weft_core").pack_free(q)
    require("weft_core").pack_free(q)
    assert.has_error(function() transfer.unpack(q, fresh_env()) end, "packed value already unpacked")
    assert.has_error(function() transfer.unpack(transfer.pack(print), nil) end, "env must be a table, got nil")
  end)

  it("load on the other side the modules values refer to", function()
    package.preload.tr_mod = function() return { f = function() return "fresh" end } end
    local old = require "tr_mod"
    local p = transfer.pack(function() return old.f end)
    package.loaded.tr_mod = nil -- as in a VM that has not loaded it
    local fn = transfer.unpack(p, fresh_env())
    local f = fn()
    assert.are.equal("fresh", f())
    assert.are_not.equal(old.f, f)
    assert.are.equal(package.loaded.tr_mod.f, f)
    package.loaded.tr_mod, package.preload.tr_mod = nil, nil
  end)

  it("fail to unpack, naming the value, when a module cannot be loaded there", function()
    package.loaded.tr_gone = { f = function() end }
    local gone = package.loaded.tr_gone.f
    local p = transfer.pack(function() return gone end)
    package.loaded.tr_gone = nil
    local ok, err = pcall(transfer.unpack, p, fresh_env())
    assert.is_false(ok)
    assert.matches("^cannot resolve 'tr_gone%.f': module 'tr_gone' not found", err)
  end)

  it("rebuild the names map when package.loaded changes", function()
    local f = function() end
    assert.is_nil(transfer.names()[f])
    package.loaded.tr_new = { f = f }
    assert.are.equal("tr_new.f", transfer.names()[f])
    assert.are.equal("tr_new", transfer.names()[package.loaded.tr_new])
    package.loaded.tr_new = nil
    assert.is_nil(transfer.names()[f])
    assert.are.equal("pairs", transfer.names()[pairs])
    assert.are.equal("string.format", transfer.names()[string.format])
    assert.are.equal("_G", transfer.names()[_G])
  end)
end)

describe("transfer.pack errors", function()
  it("name an upvalue that cannot be copied", function()
    local co = coroutine.create(print)
    local fn = function() return co end
    assert.matches("cannot copy upvalue 'co' (thread) of function at " .. at(fn), err_of(fn), 1, true)
    local pattern = lpeg.P "x" -- made by lpeg, not reachable from the module
    local fn2 = function(s) return pattern:match(s) end
    assert.matches("cannot copy upvalue 'pattern' (userdata) of function at " .. at(fn2), err_of(fn2), 1, true)
  end)

  it("name a global that cannot be copied, and the function that reads it", function()
    tr_ud = newproxy()
    local fn = function() return tr_ud end
    local err = err_of(fn)
    local inner
    local fn2 = function()
      inner = function() return tr_ud end
      return inner
    end
    local err2 = err_of(fn2)
    tr_ud = nil
    assert.matches("cannot copy global 'tr_ud' (userdata) of function at " .. at(fn), err, 1, true)
    local line = debug.getinfo(fn2, "S").linedefined + 1
    assert.matches("cannot copy global 'tr_ud' (userdata) of function at " ..
      debug.getinfo(fn2, "S").short_src .. ":" .. line, err2, 1, true)
  end)

  it("name the path inside a global, and a global through which an upvalue was reached", function()
    tr_cfg = { sock = newproxy() }
    local fn = function() return tr_cfg end
    local err = err_of(fn)
    local co = coroutine.create(print)
    tr_helper = function() return co end
    local fn2 = function() return tr_helper() end
    local err2 = err_of(fn2)
    local helper_at = at(tr_helper)
    tr_cfg, tr_helper = nil, nil
    assert.matches("cannot copy userdata at field 'sock' in global 'tr_cfg' of function at " .. at(fn), err, 1,
      true)
    assert.matches("cannot copy upvalue 'co' (thread) of function at " .. helper_at ..
      " (reached through global 'tr_helper' of function at " .. at(fn2) .. ")", err2, 1, true)
  end)

  it("name an argument that cannot be copied", function()
    local fn = function() end
    assert_message("cannot copy argument 2 (userdata)", err_of(fn, 1, newproxy()))
    assert_message("cannot copy thread at field 'co' in argument 1", err_of(fn, { co = coroutine.create(print) }))
  end)

  it("raise at the level of spawn's caller", function()
    local function spawn(fn, ...)
      local packed = transfer.pack(fn, ...)
      return packed
    end
    local line
    local ok, err = pcall(function()
      line = debug.getinfo(1, "l").currentline + 1
      spawn(function() end, newproxy())
    end)
    assert.is_false(ok)
    assert.matches(":" .. line .. ": cannot copy argument 1 (userdata)", err, 1, true)
    assert.matches("fn must be a function, got number", select(2, pcall(spawn, 42)), 1, true)
  end)

  it("accept userdata and other values reachable from modules", function()
    tr_out = io.stdout
    local ok = pcall(transfer.pack, function() return tr_out, io.stderr, lpeg.match end, io.stdin)
    tr_out = nil
    assert.is_true(ok)
  end)
end)
