-- weft.context: cancellation trees, deadlines, causes and values, across
-- goroutines, isolates and processors.
local weft = require "weft"
local async = require "weft.busted"
local context = require "weft.context"

local function run(fn, ...)
  return weft.run({ procs = 2 }, fn, ...)
end

-- true when ch is closed (never blocks).
local function closed(ch)
  return weft.select(weft.recv(ch, function(_, ok) return not ok end), weft.default(function() return false end))
end

describe("weft.context", function()
  it("is weft.context too", function()
    assert.are.equal(context, weft.context)
  end)

  it("background is never cancelled and has no deadline, values or done channel", async(function()
    local bg = context.background()
    assert.are.equal(bg, context.background())
    assert.are.equal(bg, context.todo())
    assert.is_nil(bg:err())
    assert.is_nil(bg:done())
    assert.is_nil(bg:deadline())
    assert.is_nil(bg:value("k"))
    assert.is_nil(context.cause(bg))
    assert.are.equal(0, context.children(bg))
  end))

  it("with_cancel: done closes and err reads 'context canceled'; cancel is idempotent", async(function()
    local ctx, cancel = context.with_cancel(context.background())
    assert.is_nil(ctx:err())
    assert.is_false(closed(ctx:done()))
    assert.is_nil(context.cause(ctx))
    cancel()
    assert.are.equal("context canceled", ctx:err())
    assert.is_true(closed(ctx:done()))
    local v, ok = ctx:done():recv()
    assert.is_nil(v)
    assert.is_false(ok)
    cancel()
    cancel("late")
    assert.are.equal("context canceled", ctx:err())
    assert.are.equal("context canceled", context.cause(ctx)) -- no cause given first
  end))

  it("wakes every goroutine waiting on done, on every processor", function()
    local woke = run(function()
      local ctx, cancel = context.with_cancel(context.background())
      local out = weft.chan()
      for _ = 1, 5 do
        weft.go(function() ctx:done():recv(); out:send(ctx:err()) end)
        weft.spawn(function() ctx:done():recv(); out:send(ctx:err()) end)
      end
      weft.sleep(0.01)
      cancel()
      local n = 0
      for _ = 1, 10 do if out:recv() == "context canceled" then n = n + 1 end end
      return n
    end)
    assert.are.equal(10, woke)
  end)

  it("records the first cancel's cause; descendants share it", async(function()
    local parent, cancel = context.with_cancel(context.background())
    local child = context.with_cancel(context.with_value(parent, "k", 1))
    cancel({ code = 42, msg = "stop" })
    cancel("second")
    assert.are.same({ code = 42, msg = "stop" }, context.cause(parent))
    assert.are.same({ code = 42, msg = "stop" }, context.cause(child))
    assert.are.equal("context canceled", child:err())
  end))

  it("refuses a cause that cannot be copied, leaving the context alone", async(function()
    local ctx, cancel = context.with_cancel(context.background())
    local ok, err = pcall(cancel, coroutine.create(print))
    assert.is_false(ok)
    assert.matches("cause: cannot copy thread", err)
    assert.is_nil(ctx:err())
    cancel("fine")
    assert.are.equal("fine", context.cause(ctx))
  end))

  it("cancelling a parent cancels every descendant at once; a child's cancel never touches its parent", async(function()
    local root, cancel_root = context.with_cancel(context.background())
    local a, cancel_a = context.with_cancel(root)
    local b = context.with_cancel(context.with_value(root, "x", 1))
    local a1 = context.with_cancel(a)
    local a2 = context.with_value(context.with_cancel(a1), "y", 2)
    cancel_a("only a")
    assert.is_nil(root:err())
    assert.is_nil(b:err())
    assert.are.equal("context canceled", a:err())
    assert.are.equal("context canceled", a1:err())
    assert.are.equal("context canceled", a2:err())
    assert.are.equal("only a", context.cause(a2))
    assert.are.equal(1, context.children(root)) -- b; a left when it was cancelled
    cancel_root()
    assert.are.equal("context canceled", b:err())
    assert.is_true(closed(b:done()))
    assert.are.equal("only a", context.cause(a1)) -- a's cancel came first
    assert.are.equal(0, context.children(root))
  end))

  it("a child of a cancelled parent starts cancelled", async(function()
    local p, cancel = context.with_cancel(context.background())
    cancel("gone")
    local c = context.with_cancel(p)
    assert.are.equal("context canceled", c:err())
    assert.is_true(closed(c:done()))
    assert.are.equal("gone", context.cause(c))
    local d = context.with_timeout(p, 10)
    assert.are.equal("context canceled", d:err())
  end))

  it("with_timeout: err reads 'context deadline exceeded' once the deadline passes", async(function()
    local t0 = weft.now()
    local ctx, cancel = context.with_timeout(context.background(), 0.05)
    assert.is_true(math.abs(ctx:deadline() - (t0 + 0.05)) < 0.01)
    assert.is_nil(ctx:err())
    ctx:done():recv()
    assert.is_true(weft.now() - t0 >= 0.045)
    assert.are.equal("context deadline exceeded", ctx:err())
    assert.are.equal("context deadline exceeded", context.cause(ctx))
    cancel("after")
    assert.are.equal("context deadline exceeded", ctx:err())
  end))

  it("with_deadline on the weft.now() clock; a deadline already past cancels at once", async(function()
    local t = weft.now() + 0.03
    local ctx = context.with_deadline(context.background(), t)
    assert.are.equal(t, ctx:deadline())
    ctx:done():recv()
    assert.are.equal("context deadline exceeded", ctx:err())
    local past = context.with_deadline(context.background(), weft.now() - 1)
    assert.are.equal("context deadline exceeded", past:err())
    assert.is_true(closed(past:done()))
  end))

  it("cancel before the deadline wins and the timer never fires later", async(function()
    local ctx, cancel = context.with_timeout(context.background(), 0.02)
    cancel()
    weft.sleep(0.05)
    assert.are.equal("context canceled", ctx:err())
  end))

  it("a child never outlives its parent's deadline", async(function()
    local parent = context.with_timeout(context.background(), 0.05)
    local later = context.with_timeout(parent, 10)
    local earlier = context.with_timeout(parent, 0.01)
    local plain = context.with_value(context.with_cancel(parent), "k", "v")
    assert.are.equal(parent:deadline(), later:deadline())
    assert.are.equal(parent:deadline(), plain:deadline())
    assert.is_true(earlier:deadline() < parent:deadline())
    earlier:done():recv()
    assert.are.equal("context deadline exceeded", earlier:err())
    assert.is_nil(parent:err()) -- a child's deadline never touches its parent
    later:done():recv()
    assert.are.equal("context deadline exceeded", later:err())
    assert.are.equal("context deadline exceeded", parent:err()) -- marked before its children
    -- The children are cancelled one after another, as in Go: one of them
    -- being done says nothing yet of its siblings.
    plain:done():recv()
    assert.are.equal("context deadline exceeded", plain:err())
  end))

  it("value walks up; the nearest wins; keys compare by value, engine objects by identity", async(function()
    local k1, k2 = weft.chan(), weft.chan()
    local ctx = context.with_value(context.background(), "user", "ann")
    ctx = context.with_value(ctx, 7, { n = 1 })
    ctx = context.with_value(ctx, true, "yes")
    ctx = context.with_cancel(ctx)
    ctx = context.with_value(ctx, k1, "private")
    ctx = context.with_value(ctx, "user", "bob")
    ctx = context.with_value(ctx, "gone", nil)
    assert.are.equal("bob", ctx:value("user"))
    assert.are.same({ n = 1 }, ctx:value(7))
    assert.are.equal("yes", ctx:value(true))
    assert.are.equal("private", ctx:value(k1))
    assert.is_nil(ctx:value(k2))
    assert.is_nil(ctx:value("gone"))
    assert.is_nil(ctx:value("missing"))
    assert.is_nil(ctx:value(8))
    -- values are copies: changing one changes nothing stored
    local t = ctx:value(7)
    t.n = 99
    assert.are.equal(1, ctx:value(7).n)
  end))

  it("refuses table, function and nil keys and values that cannot be copied", async(function()
    local bg = context.background()
    assert.has_error(function() context.with_value(bg, {}, 1) end,
      "weft.context: key must be a string, number, boolean or engine object, got table")
    assert.has_error(function() context.with_value(bg, print, 1) end)
    assert.has_error(function() context.with_value(bg, nil, 1) end, "weft.context.with_value: key must not be nil")
    local ok, err = pcall(context.with_value, bg, "k", coroutine.create(print))
    assert.is_false(ok)
    assert.matches("value: cannot copy thread", err)
    assert.has_error(function() context.with_cancel({}) end,
      "weft.context.with_cancel: parent must be a context, got table")
  end))

  it("passes the SAME context over channels and to spawn; values read in another VM", async(function()
    local key = weft.chan()
    local ctx, cancel = context.with_cancel(context.background())
    ctx = context.with_value(ctx, key, { list = { 1, 2, 3 } })
    local ch = weft.chan(1)
    ch:send(ctx)
    assert.is_true(ch:recv() == ctx)
    local back = weft.chan()
    weft.spawn(function(c, k, out)
      out:send(c)
      out:send(c:value(k))
      c:done():recv()
      out:send(c:err())
    end, ctx, key, back)
    assert.is_true(back:recv() == ctx)
    assert.are.same({ list = { 1, 2, 3 } }, back:recv())
    cancel()
    assert.are.equal("context canceled", back:recv())
  end))

  it("cancels descendants created in spawned isolates on another processor", function()
    local got = run(function()
      local root, cancel = context.with_cancel(context.background())
      local ready, out = weft.chan(), weft.chan()
      for i = 1, 4 do
        weft.spawn(function()
          -- a subtree of its own: cancel, deadline and value contexts
          local a = context.with_cancel(root)
          local b = context.with_timeout(context.with_value(a, "i", i), 60)
          local c = context.with_cancel(b)
          ready:send(true)
          c:done():recv()
          out:send({ a:err(), b:err(), c:err(), context.cause(c), weft.procs() })
        end)
      end
      for _ = 1, 4 do ready:recv() end
      assert.are.equal(4, context.children(root))
      cancel("shutdown")
      local all = {}
      for i = 1, 4 do all[i] = out:recv() end
      assert.are.equal(0, context.children(root))
      return all
    end)
    for i = 1, 4 do
      assert.are.same({ "context canceled", "context canceled", "context canceled", "shutdown", 2 }, got[i])
    end
  end)

  it("a cancel function sent to an isolate cancels the context for everyone", async(function()
    local ctx, cancel = context.with_cancel(context.background())
    local child = context.with_cancel(ctx)
    weft.spawn(function() cancel("from afar") end)
    child:done():recv()
    assert.are.equal("context canceled", ctx:err())
    assert.are.equal("from afar", context.cause(child))
  end))

  it("frees cancelled subtrees: 100k short-lived children leave a long-lived parent as it was", async(function()
    collectgarbage()
    local parent, cancel_parent = context.with_cancel(context.background())
    local base = context.live()
    for i = 1, 100000 do
      local c, cancel = context.with_cancel(parent)
      if i % 3 == 0 then c = context.with_timeout(c, 60) end -- its timer goes too
      if i % 5 == 0 then c = context.with_value(c, "i", i) end
      cancel()
      if i == 50000 then
        assert.are.equal(0, context.children(parent))
      end
    end
    assert.are.equal(0, context.children(parent))
    collectgarbage()
    collectgarbage()
    assert.are.equal(base, context.live())
    -- children dropped without cancel are freed by the collector and leave the list
    for _ = 1, 1000 do context.with_cancel(parent) end
    collectgarbage()
    collectgarbage()
    assert.are.equal(0, context.children(parent))
    assert.are.equal(base, context.live())
    cancel_parent()
  end))

  it("cancels a deep chain without recursion, from a cancel and from a deadline", async(function()
    local root, cancel = context.with_cancel(context.background())
    local c = root
    for _ = 1, 20000 do c = context.with_cancel(c) end
    cancel()
    assert.are.equal("context canceled", c:err())
    local troot = context.with_timeout(context.background(), 0.01)
    local d = troot
    for _ = 1, 20000 do d = context.with_cancel(d) end
    d:done():recv()
    assert.are.equal("context deadline exceeded", d:err())
  end))
end)
