-- Diagnostics: weft.dump, deadlock detection, weft.run's leakcheck and
-- timeout, weft.stats, schedtrace, signals, the watchdog, weft.busted.
-- Where exit codes, stderr or signals are involved the binary runs in a
-- subprocess.
local weft = require "weft"
local sync = require "weft.sync"
local async = require "weft.busted"

local function here()
  return debug.getinfo(2, "l").currentline
end

-- Runs a shell command; its stdout, its stderr and its exit code.
local function sh(cmd)
  local err = os.tmpname()
  local f = io.popen("(" .. cmd .. ") 2>" .. err .. "; echo \"exit=$?\"")
  local out = f:read("*a")
  f:close()
  local ef = io.open(err)
  local stderr = ef:read("*a")
  ef:close()
  os.remove(err)
  local body, code = out:match("^(.-)exit=(%d+)%s*$")
  return body, stderr, tonumber(code)
end

local function script(text)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(text)
  f:close()
  return name
end

-- Yields until n goroutines are parked.
local function until_waiting(n)
  while weft.stats().by_state.waiting < n do weft.yield() end
end

-- The dump entry of goroutine id (its header to the blank line after it).
local function entry(dump, id)
  return (dump .. "\n"):match("\n?(goroutine " .. id .. " %[.-\n)\n")
end

describe("weft.dump", function()
  it("shows every goroutine: wait reason, name, where it waits, where it was created", async(function()
    local c, full, wg, mu = weft.chan(), weft.chan(1), sync.waitgroup(), sync.mutex()
    full:send(0)
    wg:add(1)
    mu:lock()
    local ids, lines = {}, {}
    lines.recv = here(); ids.recv = weft.go(function() weft.name("receiver"); c:recv() end)
    lines.send = here(); ids.send = weft.go(function() full:send(1) end)
    lines.select = here(); ids.select = weft.go(function() weft.select(weft.recv(c), weft.recv(c)) end)
    lines.sleep = here(); ids.sleep = weft.go(function() weft.sleep(0.2) end)
    lines.wait = here(); ids.wait = weft.go(function() wg:wait() end)
    lines.lock = here(); ids.lock = weft.go(function() mu:lock(); mu:unlock() end)
    until_waiting(6)
    local d = weft.dump()
    local self_line = here() - 1
    assert.matches("^goroutine 1 %[running%]:\n\tspec/diag_spec.lua:" .. self_line .. ": in function", d)
    local reasons = { recv = "chan receive", send = "chan send", select = "select", sleep = "sleep",
                      wait = "sync.WaitGroup.Wait", lock = "sync.Mutex.Lock" }
    for k, reason in pairs(reasons) do
      local e = entry(d, ids[k])
      assert.is_not_nil(e, k)
      local where = "spec/diag_spec.lua:" .. lines[k]
      assert.are.equal("goroutine " .. ids[k] .. " [" .. reason .. "]:", e:match("^[^\n]*"))
      assert.matches("\n\t" .. where .. ": in function <", e, 1, false)
      assert.matches("\ncreated by " .. where .. " in goroutine 1\n$", e)
    end
    assert.matches("\nname: receiver\n", entry(d, ids.recv))
    -- every goroutine once, in order of id
    local seen = {}
    for id in d:gmatch("goroutine (%d+) %[") do seen[#seen + 1] = tonumber(id) end
    assert.are.same({ 1, ids.recv, ids.send, ids.select, ids.sleep, ids.wait, ids.lock }, seen)
    c:close(); full:recv(); wg:done(); mu:unlock()
    weft.go(function() end)
    for _ = 1, 2 do c:recv() end
  end))

  it("says how long a goroutine has waited, past a second", async(function()
    local c = weft.chan()
    local id = weft.go(function() c:recv() end)
    weft.sleep(1.1) -- time is what is tested
    assert.matches("^goroutine " .. id .. " %[chan receive, 1s%]:", entry(weft.dump(), id))
    c:send(1)
  end))

  it("shows native goroutines and isolates", async(function()
    local ffi = require "ffi"
    pcall(ffi.cdef, "void checksum_stage(void *arg);")
    local stage = ffi.load("build/examples/native_stage.so")
    local input, output = weft.chan(), weft.chan()
    local nid = weft.go_native(stage.checksum_stage, input, output)
    local started = weft.chan()
    local line = here(); local iid = weft.spawn(function(s) weft.name("iso"); s:send(1); s:send(2) end, started)
    started:recv()
    until_waiting(2)
    local d = weft.dump()
    assert.matches("^goroutine " .. nid .. " %[chan receive%]:\n\t%(native goroutine: C code, no Lua traceback%)\n"
      .. "created by native code in goroutine 1\n", entry(d, nid))
    assert.matches("^goroutine " .. iid .. " %[chan send%]:\nname: iso\n\tspec/diag_spec.lua:" .. line
      .. ": in function <.*created by spec/diag_spec.lua:" .. line .. " in goroutine 1\n$", entry(d, iid))
    started:recv()
    input:close()
    for _ in output:range() do end
  end))

  it("shows a processor busy in a goroutine that does not yield", async(function()
    local stop, started = weft.atomic(0), weft.atomic(0)
    local id = weft.spawn(function(stop, started)
      weft.name("spinner")
      started:store(1)
      while stop:load() == 0 do end
    end, stop, started)
    while started:load() == 0 do weft.yield() end
    local e = entry(weft.dump(), id)
    stop:store(1)
    assert.matches("^goroutine " .. id .. " %[running[^\n]*%]:\n\t%(running on processor 1 for [%d.]+s without yielding", e)
    assert.matches("\nname: spinner\ncreated by spec/diag_spec.lua:%d+ in goroutine 1\n$", e)
  end, { procs = 2 }))

  it("is refused outside the engine", function()
    assert.has_error(function() weft.dump() end,
      "weft.dump: the engine is not running (start it with weft.run)")
  end)
end)

describe("deadlock", function()
  local DEADLOCK = "fatal error: all goroutines are asleep %- deadlock!\n\n"

  it("makes the binary print the report and a dump, and exit 2", function()
    for _, procs in ipairs({ 1, 2, 3 }) do
      local s = script([[
        local weft = require "weft"
        local c = weft.chan()
        weft.go(function() weft.name("stuck sender"); c:send(1) end)
        local wg = require("weft.sync").waitgroup()
        wg:add(1)
        wg:wait()
      ]])
      local out, err, code = sh("build/weft -p " .. procs .. " " .. s)
      os.remove(s)
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.matches("^" .. DEADLOCK .. "goroutine 1 %[sync.WaitGroup.Wait%]:\n\t[^\n]*:6: in main chunk\n\n"
        .. "goroutine 2 %[chan send%]:\nname: stuck sender\n", err)
    end
  end)

  it("makes weft.run raise the same report", function()
    for _, procs in ipairs({ 1, 2 }) do
      local ok, err = pcall(weft.run, { procs = procs }, function()
        local c = weft.chan()
        weft.go(function() c:recv() end)
        weft.chan():send(1)
      end)
      assert.is_false(ok)
      assert.matches("^" .. DEADLOCK .. "goroutine 1 %[chan send%]:\n.*goroutine 2 %[chan receive%]:", err)
    end
    -- select with no cases, and a nil channel, are deadlocks too
    local ok, err = pcall(weft.run, function() weft.select() end)
    assert.is_false(ok)
    assert.matches("^" .. DEADLOCK .. "goroutine 1 %[select %(no cases%)%]:", err)
  end)

  it("is not reported while a timer, a busy processor or a ready goroutine can still wake someone", function()
    for _ = 1, 20 do
      local got = weft.run({ procs = 2 }, function()
        local c, d = weft.chan(), weft.chan()
        weft.go(function() c:send(weft.after(0.002):recv() and "timer") end)
        local r1 = c:recv()
        -- an isolate computing for a while, then sending
        weft.spawn(function(d)
          local x = 0
          for i = 1, 2e6 do x = x + i end
          d:send(x > 0 and "isolate")
        end, d)
        local r2 = d:recv()
        local t = weft.timer(0.002)
        t.c:recv()
        return r1 .. r2
      end)
      assert.are.equal("timerisolate", got)
    end
  end)
end)

describe("weft.run options", function()
  it("leakcheck raises with a dump of each goroutine still alive", function()
    local line
    local ok, err = pcall(weft.run, { leakcheck = true }, function()
      local c = weft.chan()
      line = here(); weft.go(function() weft.name("leaky"); c:recv() end)
      weft.go(function() weft.sleep(0.01) end) -- finishes within the grace period
      weft.go(function() end)
      return 1
    end)
    assert.is_false(ok)
    assert.matches("^weft.run: leakcheck: 1 goroutine still alive 0.5s after main returned:\n\n"
      .. "goroutine 2 %[chan receive%]:\nname: leaky\n\tspec/diag_spec.lua:" .. line
      .. ": in function <[^\n]*\ncreated by spec/diag_spec.lua:" .. line .. " in goroutine 1\n$", err)
    assert.is_nil(err:find("goroutine 1 ", 1, true))
    assert.are.same({ true, 7 }, { pcall(weft.run, { leakcheck = true }, function() return 7 end) })
  end)

  it("leakcheck reports survivors even when the timeout is shorter than its grace period", function()
    local ok, err = pcall(weft.run, { leakcheck = true, timeout = 0.2 }, function()
      weft.go(function() weft.chan():recv() end)
    end)
    assert.is_false(ok)
    assert.matches("^weft.run: leakcheck: 1 goroutine still alive [^\n]*\n\ngoroutine 2 %[chan receive%]:", err)
  end)

  it("timeout raises with a dump of every goroutine", function()
    local ok, err = pcall(weft.run, { timeout = 0.2 }, function()
      local c = weft.chan()
      weft.go(function() c:recv() end)
      weft.sleep(30)
    end)
    assert.is_false(ok)
    assert.matches("^weft.run: timeout: main has not returned after 0.2s\n\n"
      .. "goroutine 1 %[sleep%]:\n.*\ngoroutine 2 %[chan receive%]:", err)
    -- the next run has no timeout left over
    assert.are.equal(3, weft.run(function() weft.sleep(0.3); return 3 end))
  end)

  it("refuse a bad timeout", function()
    assert.has_error(function() weft.run({ timeout = -1 }, function() end) end,
      "weft.run: opts.timeout must be a positive number of seconds, got -1")
  end)
end)

describe("weft.stats", function()
  it("counts goroutines by state, and per processor queues, switches, operations, timers, memory",
    async(function()
      local c = weft.chan()
      for _ = 1, 5 do weft.go(function() c:recv() end) end
      local t = weft.timer(30)
      until_waiting(5)
      local before = weft.stats()
      for _ = 1, 5 do c:send(1) end
      weft.yield()
      local s = weft.stats()
      assert.are.equal(6, before.goroutines)
      assert.are.equal(5, before.by_state.waiting)
      assert.are.equal(1, before.by_state.running)
      assert.are.equal(2, #s.procs)
      assert.is_true(s.chan_ops >= before.chan_ops + 5)
      assert.is_true(s.switches > before.switches)
      assert.is_true(s.timers >= 1)
      for i, p in ipairs(s.procs) do
        assert.are.equal(i - 1, p.id)
        for _, k in ipairs({ "runq", "inbox", "switches", "steals", "chan_ops", "timers", "timers_fired" }) do
          assert.are.equal("number", type(p[k]), k)
        end
        assert.is_true(p.memory_kb > 0)
      end
      assert.is_true(s.memory_kb >= s.procs[1].memory_kb + s.procs[2].memory_kb - 1e-6)
      t:stop()
    end))
end)

describe("the binary's diagnostics", function()
  it("prints schedtrace lines with WEFT_DEBUG=schedtrace=MS, and details with scheddetail=1", function()
    local _, err, code = sh("WEFT_DEBUG=schedtrace=20,scheddetail=1 build/weft -p 2 -e "
      .. "'local weft = require \"weft\"; weft.sleep(0.2)'")
    assert.are.equal(0, code)
    local n = 0
    for line in err:gmatch("[^\n]+") do
      if line:match("^SCHED") then
        n = n + 1
        assert.matches("^SCHED %d+ms: procs=2 idleprocs=%d threads=3 spinning=%d goroutines=%d+ "
          .. "runqueue=%d+ %[%d+ %d+%]$", line)
      end
    end
    assert.is_true(n >= 2)
    assert.matches("\n  P0: status=%a+ switches=%d+", err)
    assert.matches("\n  G1: status=sleep kind=lua proc=0\n", err)
  end)

  it("keeps SCHED lines in their format while a goroutine runs without yielding", function()
    local s = script([[
      local weft = require "weft"
      local stop = weft.atomic(0)
      weft.spawn(function(stop) while stop:load() == 0 do end end, stop)
      weft.sleep(0.3)
      stop:store(1)
    ]])
    local _, err, code = sh("WEFT_DEBUG=schedtrace=20,longrun=0 build/weft -p 2 " .. s)
    os.remove(s)
    assert.are.equal(0, code)
    local n = 0
    for line in err:gmatch("[^\n]+") do
      if line:match("^SCHED") then
        n = n + 1
        assert.matches("^SCHED %d+ms: procs=2 idleprocs=%d threads=3 spinning=%d goroutines=%d+ "
          .. "runqueue=%d+ %[%d+ %d+%]$", line)
      end
    end
    assert.is_true(n >= 2)
    assert.matches("\n  nonyielding: G2 on P1 for %d+ms\n", err)
  end)

  it("leaves the signals it takes unblocked in the processes a script starts", function()
    if not io.open("/proc/self/status") then return end -- Linux only
    local base = sh("cat /proc/self/status | grep SigBlk")
    local s = script([[
      local weft = require "weft"
      os.execute("cat /proc/self/status | grep SigBlk")
      local c = weft.chan()
      for _ = 1, 3 do
        weft.spawn(function(c) os.execute("cat /proc/self/status | grep SigBlk"); c:send(true) end, c)
      end
      for _ = 1, 3 do c:recv() end
    ]])
    local out, _, code = sh("build/weft -p 2 " .. s)
    os.remove(s)
    assert.are.equal(0, code)
    local n = 0
    for line in out:gmatch("SigBlk[^\n]*") do
      n = n + 1
      assert.are.equal(base:match("SigBlk[^\n]*"), line)
    end
    assert.are.equal(4, n)
  end)

  it("dumps on SIGUSR1 and goes on; dumps on SIGQUIT and exits 2", function()
    local ready = os.tmpname()
    local s = script([[
      local weft = require "weft"
      weft.go(function() weft.name("parked"); weft.chan():recv() end)
      weft.yield()
      local f = io.open("]] .. ready .. [[", "w")
      f:write("ready")
      f:close()
      weft.sleep(30)
    ]])
    local log = os.tmpname()
    local out, err, code = sh(table.concat({
      "build/weft -p 2 " .. s .. " 2>" .. log .. " & pid=$!",
      "while [ ! -s " .. ready .. " ]; do sleep 0.02; done",
      "kill -USR1 $pid",
      "while ! grep -q '^SIGUSR1: dump' " .. log .. "; do sleep 0.02; done",
      "kill -0 $pid && echo alive",
      "kill -QUIT $pid",
      "wait $pid; rc=$?",
      "cat " .. log .. " >&2",
      "exit $rc",
    }, "\n"))
    os.remove(s)
    os.remove(ready)
    os.remove(log)
    assert.are.equal(2, code)
    assert.are.equal("alive\n", out)
    local usr1, quit = err:match("^SIGUSR1: dump\n\n(.-)SIGQUIT: quit\n\n(.*)$")
    assert.is_not_nil(usr1, err)
    for _, d in ipairs({ usr1, quit }) do
      assert.matches("^goroutine 1 %[sleep%]:\n\t[^\n]*:7: in main chunk\n\ngoroutine 2 %[chan receive%]:\nname: parked\n", d)
    end
  end)

  it("reports a goroutine that runs without yielding, once, with its name and creation site", function()
    local s = script([[
      local weft = require "weft"
      local stop = weft.atomic(0)
      weft.spawn(function(stop)
        weft.name("spinner")
        while stop:load() == 0 do end
      end, stop)
      weft.sleep(0.5)
      stop:store(1)
    ]])
    local _, err, code = sh("WEFT_DEBUG=longrun=100 build/weft -p 2 " .. s)
    os.remove(s)
    assert.are.equal(0, code)
    assert.matches("^weft: goroutine 2 has been running for 0%.%ds on processor 1 without yielding "
      .. "%(it cannot be preempted, and where it runs cannot be read while it runs; what is known:%)\n"
      .. "name: spinner\ncreated by [^\n]*:3 in goroutine 1\n$", err)
  end)
end)

describe("weft.busted", function()
  it("fails the test with the message of an assertion that failed in any goroutine", function()
    local ok, err = pcall(async(function()
      local c = weft.chan()
      weft.go(function() assert.are.equal(1, 2); c:send(1) end)
      c:recv()
    end))
    assert.is_false(ok)
    assert.matches("error in goroutine 2: spec/diag_spec.lua:%d+: Expected objects to be equal.", err)
  end)

  it("fails a test that leaks goroutines, or does not finish in time", function()
    local ok, err = pcall(async(function() weft.go(function() weft.chan():recv() end) end))
    assert.is_false(ok)
    assert.matches("^weft.run: leakcheck: 1 goroutine still alive", err)
    ok, err = pcall(async(function() weft.sleep(10) end, { timeout = 0.1 }))
    assert.is_false(ok)
    assert.matches("^weft.run: timeout: main has not returned after 0.1s\n\ngoroutine 1 %[sleep%]:", err)
    assert.has_error(function() async(42) end, "weft.busted: fn must be a function, got number")
  end)
end)
