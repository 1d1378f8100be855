-- weft.errgroup: first failure, cancellation, limits, across processors.
local weft = require "weft"
local async = require "weft.busted"
local context = require "weft.context"
local errgroup = require "weft.errgroup"

local function run(fn, ...)
  return weft.run({ procs = 2 }, fn, ...)
end

describe("weft.errgroup", function()
  it("waits for every task and returns nil when none fails; wait cancels ctx", async(function()
    local g, ctx = errgroup.new()
    local results = {}
    for i = 1, 10 do
      g:go(function() weft.yield(); results[i] = i * i end)
    end
    local out = weft.chan(10)
    for i = 1, 10 do g:spawn(function() out:send(i) end) end
    assert.is_nil(g:wait())
    assert.are.equal(10, #results)
    assert.are.equal(10, out:len())
    assert.are.equal("context canceled", ctx:err())
    assert.are.equal("context canceled", context.cause(ctx))
  end))

  it("a task fails when it raises or returns nil, err; other results are successes", async(function()
    local g = errgroup.new()
    g:go(function() return nil end)
    g:go(function() return false, "not an error" end)
    g:go(function() return true end)
    assert.is_nil(g:wait())
    g = errgroup.new()
    g:go(function() return nil, "returned" end)
    assert.are.equal("returned", g:wait())
    g = errgroup.new()
    g:go(function() error({ code = 7 }) end)
    assert.are.same({ code = 7 }, g:wait())
    g = errgroup.new()
    g:go(function() error("raised", 0) end)
    assert.are.equal("raised", g:wait())
    g = errgroup.new()
    g:spawn(function() error(coroutine.create(print)) end) -- cannot be copied: its text
    assert.matches("^thread: ", g:wait())
  end))

  it("the first failure wins, is what wait returns, and cancels ctx at once", async(function()
    local g, ctx = errgroup.new()
    local first_failed = weft.chan()
    g:go(function() return nil, "first" end)
    g:go(function()
      ctx:done():recv() -- cancelled by the first failure, before wait runs
      first_failed:send(context.cause(ctx))
      return nil, "second"
    end)
    g:spawn(function()
      ctx:done():recv()
      error("third", 0)
    end)
    assert.are.equal("first", first_failed:recv())
    assert.are.equal("first", g:wait())
    assert.are.equal("first", context.cause(ctx))
    assert.are.equal("first", g:wait()) -- again: the same
  end))

  it("spawned tasks on other processors report their failure by reference", function()
    local err, cause, procs = run(function()
      local g, ctx = errgroup.new()
      for i = 1, 6 do
        g:spawn(function()
          if i == 4 then return nil, { task = i } end
          ctx:done():recv()
        end)
      end
      return g:wait(), context.cause(ctx), weft.procs()
    end)
    assert.are.same({ task = 4 }, err)
    assert.are.same({ task = 4 }, cause)
    assert.are.equal(2, procs)
  end)

  it("derives ctx from a parent: cancelling the parent cancels the group", async(function()
    local parent, cancel = context.with_cancel(context.background())
    parent = context.with_value(parent, "req", 12)
    local g, ctx = errgroup.new(parent)
    assert.are.equal(12, ctx:value("req"))
    g:spawn(function()
      ctx:done():recv()
      return nil, ctx:err()
    end)
    cancel("parent gone")
    assert.are.equal("context canceled", g:wait())
    assert.are.equal("parent gone", context.cause(ctx))
    assert.has_error(function() errgroup.new({}) end, "errgroup.new: parent must be a context, got table")
  end))

  for _, how in ipairs({ "go", "spawn" }) do
    it("limit(n): never more than n tasks at once (" .. how .. ")", function()
      local peak, total = run(function()
        local LIMIT, N = 3, 12
        local g = errgroup.new()
        g:limit(LIMIT)
        -- active counts the tasks between their start and their end: each
        -- reports how many it saw running when it started
        local started, gate, active = weft.chan(N), weft.chan(), weft.chan(N)
        weft.go(function() -- go/spawn block while LIMIT tasks hold a slot
          for _ = 1, N do
            g[how](g, function()
              active:send(true)
              started:send(#active)
              gate:recv()
              active:recv()
            end)
          end
        end)
        local running, peak, total, released = 0, 0, 0, 0
        while total < N do
          local seen = started:recv()
          total, running = total + 1, running + 1
          if seen > peak then peak = seen end
          if running == LIMIT then
            -- full: no slot can be had until a task is released
            assert.is_false(g:trygo(function() end))
            gate:send(true)
            running, released = running - 1, released + 1
          end
        end
        for _ = released + 1, N do gate:send(true) end
        assert.is_nil(g:wait())
        return peak, total
      end)
      assert.are.equal(3, peak)
      assert.are.equal(12, total)
    end)
  end

  it("trygo starts a task only when a slot is free; limit cannot change while tasks run", async(function()
    local g = errgroup.new()
    g:limit(1)
    local gate = weft.chan()
    assert.is_true(g:trygo(function() gate:recv() end))
    assert.is_false(g:trygo(function() end))
    assert.has_error(function() g:limit(5) end,
      "errgroup: modify limit while 1 goroutines in the group are still active")
    gate:send(true)
    assert.is_nil(g:wait())
    assert.is_true(g:trygo(function() return nil, "late" end))
    assert.are.equal("late", g:wait())
    g = errgroup.new()
    assert.is_true(g:trygo(function() end)) -- no limit
    g:limit(-1)
    assert.is_nil(g:wait())
  end))

  it("checks its arguments; a task that cannot be copied releases its slot", async(function()
    local g = errgroup.new()
    g:limit(1)
    assert.has_error(function() g:go(42) end, "errgroup: go: fn must be a function, got number")
    local co = coroutine.create(print)
    local ok, err = pcall(g.spawn, g, function() return co end)
    assert.is_false(ok)
    assert.matches("cannot copy upvalue 'co'", err)
    assert.is_true(g:trygo(function() end))
    assert.is_nil(g:wait())
  end))
end)
