-- weft.io and weft.net: an echo server under 100 concurrent clients from
-- isolates on two processors, deadlines, refused connections, a peer
-- closing mid-read, a large write through a slow reader, closes that wake
-- blocked calls, stdin through the weft binary, and misuse. Goroutines meet
-- on channels and sockets; time is waited for only where timeouts are
-- what is tested.
local weft = require "weft"
local net = require "weft.net"

local function run(fn, ...)
  return weft.run({ procs = 2, timeout = 60 }, fn, ...)
end

-- An echo server on a fresh port: returns the listener; every connection
-- is served by a goroutine that writes back what it reads. stats.bytes
-- counts the bytes echoed, stats.conns the connections accepted.
local function echo_server(addr)
  local ln = assert(net.listen("tcp", addr or "127.0.0.1:0"))
  local stats = { bytes = 0, conns = 0 }
  weft.go(function()
    while true do
      local c = ln:accept()
      if not c then return end
      stats.conns = stats.conns + 1
      weft.go(function()
        while true do
          local s = c:read(4096)
          if not s then break end
          stats.bytes = stats.bytes + #s
          assert(c:write(s) == #s)
        end
        c:close()
      end)
    end
  end)
  return ln, stats
end

describe("weft.net", function()
  it("echoes for 100 concurrent clients in isolates on two processors", function()
    local clients, rounds = 100, 20
    local sent, echoed, conns = run(function()
      local ln, stats = echo_server()
      local addr = ln:addr()
      local results = weft.chan(clients)
      for i = 1, clients do
        weft.spawn(function()
          local net = require "weft.net"
          local c = assert(net.dial("tcp", addr))
          local bytes, ok = 0, true
          for r = 1, rounds do
            -- lines of varied length, split across writes
            local line = ("client %d round %d "):format(i, r) .. ("x"):rep((i * 37 + r * 11) % 300)
            local half = math.floor(#line / 2)
            assert(c:write(line:sub(1, half)))
            weft.yield()
            assert(c:write(line:sub(half + 1) .. "\n"))
            local back = assert(c:read_line())
            if back ~= line then ok = false end
            bytes = bytes + #line + 1
          end
          c:close()
          results:send({ bytes = bytes, ok = ok })
        end)
      end
      local total = 0
      for _ = 1, clients do
        local res = results:recv()
        assert(res.ok, "a client got back something else than it sent")
        total = total + res.bytes
      end
      -- every server goroutine has read its client's EOF once stats settle
      while stats.bytes < total do weft.yield() end
      ln:close()
      return total, stats.bytes, stats.conns
    end)
    assert.are.equal(sent, echoed)
    assert.are.equal(clients, conns)
    assert.is_true(sent > clients * rounds * 20)
  end)

  it("listens and dials on IPv6 and reports addresses", function()
    run(function()
      local ln, err = net.listen("tcp", "[::1]:0")
      if not ln then
        pending("no IPv6 loopback: " .. tostring(err))
        return
      end
      local addr = ln:addr()
      assert.matches("^%[::1%]:%d+$", addr)
      assert.are_not.equal("[::1]:0", addr)
      local c = assert(net.dial("tcp", addr))
      local s = assert(ln:accept())
      assert.are.equal(addr, c:remote_addr())
      assert.are.equal(s:remote_addr(), c:local_addr())
      assert(c:write("six\n"))
      assert.are.equal("six", s:read_line())
      c:close(); s:close(); ln:close()
    end)
  end)

  it("times out reads and writes at their deadlines and stays usable", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      c:set_read_deadline(weft.now() + 0.05)
      assert.are.same({ nil, "timeout" }, { c:read(10) })
      assert.are.same({ nil, "timeout" }, { c:read_line() })
      c:set_read_deadline(nil)
      assert(s:write("late\n"))
      assert.are.equal("late", c:read_line())
      -- a past deadline fails at once
      c:set_deadline(weft.now() - 1)
      assert.are.same({ nil, "timeout" }, { c:read(1) })
      c:set_deadline(nil)
      -- nobody reads s: writes fill the socket buffers, then time out
      c:set_write_deadline(weft.now() + 0.1)
      local big = ("w"):rep(1048576)
      local ok, err, written
      repeat ok, err, written = c:write(big) until not ok
      assert.are.equal("timeout", err)
      assert.is_number(written)
      c:close(); s:close(); ln:close()
    end)
  end)

  it("reports refused connections and dial timeouts", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local addr = ln:addr()
      ln:close()
      assert.are.same({ nil, "connection refused" }, { net.dial("tcp", addr) })
      assert.are.same({ nil, "connection refused" }, { net.dial("tcp", addr, 5) })
      local c, err = net.dial("tcp", "127.0.0.1:99999")
      assert.is_nil(c)
      assert.matches("invalid port", err)
    end)
  end)

  it("returns what was sent, then EOF, when the peer closes mid-read", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      local got = weft.chan(10)
      weft.go(function()
        got:send({ c:read_line() })
        got:send({ c:read_line() })
        got:send({ c:read_line() })
        got:send({ c:read(10) })
      end)
      weft.yield()
      s:write("one\r\ntwo\nunterminated")
      s:close()
      assert.are.same({ "one" }, got:recv())
      assert.are.same({ "two" }, got:recv())
      assert.are.same({ "unterminated" }, got:recv())
      assert.are.same({ nil, "EOF" }, got:recv())
      c:close(); ln:close()
    end)
  end)

  it("writes several MB through a slow reader, every byte in order", function()
    local size = 6 * 1024 * 1024
    local data
    do
      local parts = {}
      for i = 1, size / 8 do parts[i] = ("%07d\n"):format(i % 10000000) end
      data = table.concat(parts)
    end
    local result, n = run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      local done = weft.chan(1)
      weft.go(function()
        done:send({ s:write(data) })
        s:close()
      end)
      local parts, reads = {}, 0
      while true do
        local chunk, err = c:read(1000 + reads % 3000)
        if not chunk then
          assert.are.equal("EOF", err)
          break
        end
        reads = reads + 1
        parts[#parts + 1] = chunk
        weft.yield()
        if reads % 500 == 0 then weft.sleep(0.001) end
      end
      assert.are.same({ size }, done:recv())
      c:close(); ln:close()
      return table.concat(parts), reads
    end)
    assert.are.equal(#data, #result)
    assert.is_true(result == data, "the bytes read differ from the bytes written")
    assert.is_true(n > size / 4000)
  end)

  it("wakes a blocked accept with closed when the listener closes", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local res = weft.chan(3)
      for _ = 1, 3 do weft.go(function() res:send({ ln:accept() }) end) end
      weft.yield()
      assert.is_true(ln:close())
      for _ = 1, 3 do assert.are.same({ nil, "closed" }, res:recv()) end
      assert.are.same({ nil, "closed" }, { ln:accept() })
      assert.are.same({ nil, "closed" }, { ln:close() })
    end)
  end)

  it("wakes a blocked read with closed when the connection closes", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      local res = weft.chan(1)
      weft.go(function() res:send({ c:read(5) }) end)
      weft.yield()
      assert.is_true(c:close())
      assert.are.same({ nil, "closed" }, res:recv())
      assert.are.same({ nil, "closed", 0 }, { c:write("x") })
      assert.are.same({ nil, "EOF" }, { s:read(5) })
      s:close(); ln:close()
    end)
  end)

  it("fails reads and writes at once when their deadline has passed, even with data at hand", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      assert(s:write("data\nmore"))
      assert.is_true(weft.io.wait(c.fd, "r"))
      c:set_read_deadline(weft.now() - 1)
      assert.are.same({ nil, "timeout" }, { c:read(10) })
      assert.are.same({ nil, "timeout" }, { c:read_line() })
      c:set_write_deadline(weft.now() - 1)
      assert.are.same({ nil, "timeout", 0 }, { c:write("x") })
      assert.are.same({ nil, "timeout", 0 }, { c:write("") })
      -- nothing was lost, and clearing the deadlines makes it usable again
      c:set_deadline(nil)
      assert.are.equal("data", c:read_line())
      assert.are.equal("more", c:read(10))
      assert.are.equal(1, c:write("x"))
      assert.are.equal(0, c:write(""))
      assert.are.equal("x", s:read(10))
      -- a long line cut by a timeout is kept whole for the next read_line
      local long, go_on = ("L"):rep(200000), weft.chan()
      weft.go(function()
        assert(s:write(long))
        go_on:recv()
        assert(s:write("\r\n"))
      end)
      c:set_read_deadline(weft.now() + 0.1)
      assert.are.same({ nil, "timeout" }, { c:read_line() })
      c:set_read_deadline(nil)
      go_on:send(true)
      assert.is_true(c:read_line() == long)
      c:close(); s:close(); ln:close()
    end)
  end)

  it("says closed after close, also with data already buffered", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      assert(s:write("a\nb\nc"))
      assert.are.equal("a", c:read_line())
      assert.is_true(c:close())
      assert.are.same({ nil, "closed" }, { c:read(10) })
      assert.are.same({ nil, "closed" }, { c:read_line() })
      assert.are.same({ nil, "closed", 0 }, { c:write("") })
      assert.are.same({ nil, "closed", 0 }, { c:write("x") })
      assert.are.same({ nil, "closed" }, { c:close() })
      assert.are.same({ nil, "closed" }, { c:local_addr() })
      s:close(); ln:close()
    end)
  end)

  it("wakes a blocked read with closed, not with data of a socket that reuses the fd", function()
    -- one processor: no other thread takes fds (loading a VM's modules)
    for _ = 1, 20 do
      weft.run({ procs = 1, timeout = 60 }, function()
        local ln = assert(net.listen("tcp", "127.0.0.1:0"))
        local c = assert(net.dial("tcp", ln:addr()))
        local s = assert(ln:accept())
        local res = weft.chan(1)
        weft.go(function() res:send({ c:read(5) }) end)
        weft.yield()
        local fd = c.fd
        assert.is_true(c:close())
        -- a new socket gets the freed fd number (made readable by a
        -- pending connection) before the reader runs
        local ln2, others = nil, {}
        for _ = 1, 16 do
          local x = assert(net.listen("tcp", "127.0.0.1:0"))
          if x.fd == fd then ln2 = x break end
          others[#others + 1] = x
        end
        assert(ln2, "the fd number was not reused")
        local d = assert(net.dial("tcp", ln2:addr()))
        assert.are.same({ nil, "closed" }, res:recv())
        local t = assert(ln2:accept())
        assert(t:write("fresh"))
        assert.are.equal("fresh", d:read(5))
        for _, x in ipairs(others) do x:close() end
        d:close(); t:close(); s:close(); ln2:close(); ln:close()
      end)
    end
  end)

  it("reads lines of several MB, with \r\n split across reads, and an unterminated last one", function()
    local long = ("0123456789abcdef"):rep(256 * 1024) -- 4 MB
    local got = run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      weft.go(function()
        assert(s:write(long .. "\r"))
        weft.yield()
        assert(s:write("\nshort\r\n" .. long .. "\n\n" .. long))
        s:close()
      end)
      local lines = {}
      while true do
        local l, err = c:read_line()
        if not l then
          assert.are.equal("EOF", err)
          break
        end
        lines[#lines + 1] = l
      end
      c:close(); ln:close()
      return lines
    end)
    assert.are.equal(5, #got)
    assert.is_true(got[1] == long and got[3] == long and got[5] == long)
    assert.are.equal("short", got[2])
    assert.are.equal("", got[4])
  end)

  -- The lowest free fd (what the next socket gets) and an address where
  -- nobody listens.
  local function lowest_free_fd()
    collectgarbage(); collectgarbage()
    local ln = assert(net.listen("tcp", "127.0.0.1:0"))
    local fd, addr = ln.fd, ln:addr()
    ln:close()
    return fd, addr
  end

  it("times dials out, closing their sockets", function()
    weft.run({ procs = 1, timeout = 60 }, function() -- no other thread takes fds
      local ffi = require "ffi"
      pcall(ffi.cdef, "int listen(int fd, int backlog);")
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      -- a listener that never accepts, with the smallest backlog: once it
      -- is full, the handshakes of further dials are not answered
      assert.are.equal(0, ffi.C.listen(ln.fd, 0))
      local first = assert(net.dial("tcp", ln:addr()))
      local fd = lowest_free_fd()
      for _ = 1, 3 do
        assert.are.same({ nil, "timeout" }, { net.dial("tcp", ln:addr(), 0.05) })
      end
      assert.are.same({ nil, "timeout" }, { net.dial("tcp", ln:addr(), 0) })
      assert.are.equal(fd, (lowest_free_fd()))
      first:close(); ln:close()
    end)
  end)

  it("closes the socket of a dial that cannot wait", function()
    weft.run({ procs = 1, timeout = 60 }, function() -- no other thread takes fds
      local fd, addr = lowest_free_fd()
      for _ = 1, 3 do
        assert.has_error(function()
          table.sort({ 1, 2 }, function() return net.dial("tcp", addr) end)
        end, "cannot block here: table.sort comparator")
      end
      assert.are.equal(fd, (lowest_free_fd()))
    end)
    local ok, err = pcall(net.dial, "tcp", "127.0.0.1:1")
    assert.is_false(ok)
    assert.matches("weft.net.dial: not inside a goroutine", err)
  end)

  it("refuses to send connections and listeners to another isolate", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local ch = weft.chan(1)
      assert.has_error(function() ch:send(ln) end, "cannot copy userdata at field 'isolate_bound'")
      local ok, err = pcall(weft.spawn, function() return ln:addr() end)
      assert.is_false(ok)
      assert.matches("cannot copy userdata at field 'isolate_bound' in upvalue 'ln'", err)
      ln:close()
    end)
  end)

  it("raises on bad arguments, naming them", function()
    run(function()
      assert.has_error(function() net.listen("udp", "x:1") end,
        "bad argument #1 to 'weft.net.listen' (network must be \"tcp\", got udp)")
      assert.has_error(function() net.dial("tcp", 80) end,
        "bad argument #2 to 'weft.net.dial' (address must be a \"host:port\" string, got number)")
      assert.has_error(function() net.dial("tcp", "x:1", -1) end,
        "bad argument #3 to 'weft.net.dial' (timeout must be a non-negative number of seconds, got -1)")
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      assert.has_error(function() c:read(0) end,
        "bad argument #1 to 'read' (n must be a positive integer, got 0)")
      assert.has_error(function() c:write({}) end,
        "bad argument #1 to 'write' (string expected, got table)")
      assert.has_error(function() c:set_deadline("soon") end,
        "bad argument #1 to 'set_deadline' (t must be a time on the weft.now() clock or nil, got soon)")
      assert.has_error(function() c.read(ln, 1) end,
        "bad argument #1 to 'read' (weft.net connection expected, got table)")
      c:close(); ln:close()
    end)
  end)
end)

describe("weft.io", function()
  it("waits for readiness with a timeout", function()
    run(function()
      local ln = assert(net.listen("tcp", "127.0.0.1:0"))
      local c = assert(net.dial("tcp", ln:addr()))
      local s = assert(ln:accept())
      assert.are.same({ nil, "timeout" }, { weft.io.wait(c.fd, "r", 0.05) })
      assert.is_true(weft.io.wait(c.fd, "w"))
      assert.is_true(weft.io.wait(c.fd, "rw", 1))
      weft.go(function() s:write("!") end)
      assert.is_true(weft.io.wait(c.fd, "r"))
      assert.are.equal("!", c:read(1))
      c:close(); s:close(); ln:close()
    end)
  end)

  it("raises on bad arguments and outside goroutines", function()
    assert.has_error(function() weft.io.wait(0, "r") end,
      "weft.io.wait: not inside a goroutine (start one with weft.run)")
    run(function()
      assert.has_error(function() weft.io.wait(-1, "r") end,
        "bad argument #1 to 'weft.io.wait' (fd must be a non-negative integer, got -1)")
      assert.has_error(function() weft.io.wait(0, "x") end,
        "bad argument #2 to 'weft.io.wait' (mode must be \"r\", \"w\" or \"rw\", got x)")
      assert.has_error(function() weft.io.wait(0, "r", -1) end,
        "bad argument #3 to 'weft.io.wait' (timeout must be a non-negative number of seconds, got -1)")
      assert.has_error(function() table.sort({ 1, 2 }, function() return weft.io.wait(0, "r") end) end,
        "cannot block here: table.sort comparator")
    end)
  end)

  local function sh(cmd)
    local f = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
    local out = f:read("*a")
    f:close()
    local body, code = out:match("^(.-)exit=(%d+)%s*$")
    return body, tonumber(code)
  end

  it("reads lines from a piped stdin without blocking its processor", function()
    -- The writer stops after two lines until a goroutine on the same single
    -- processor has ticked five times while main waits for stdin (it then
    -- opens the fifo the writer waits on); were main's wait blocking the
    -- processor, nothing would tick and the command would time out.
    local fifo = os.tmpname()
    os.remove(fifo)
    assert(os.execute("mkfifo " .. fifo) == 0)
    local out, code = sh([[(printf 'a\nbb\n'; timeout 20 cat ]] .. fifo .. [[ >/dev/null; printf 'ccc\nlast') |
      timeout 20 build/weft -p 1 -e '
      local weft = require "weft"
      local ticks, lines = 0, 0
      weft.go(function()
        while lines < 2 do weft.yield() end
        for _ = 1, 5 do weft.sleep(0.001); ticks = ticks + 1 end
        assert(io.open("]] .. fifo .. [[", "w")):close()
      end)
      local lens = {}
      for l in weft.io.lines(0) do lines = lines + 1; lens[#lens + 1] = l .. "=" .. #l end
      print(table.concat(lens, " "), ticks)']])
    os.remove(fifo)
    assert.are.equal("a=1 bb=2 ccc=3 last=4\t5\n", out)
    assert.are.equal(0, code)
  end)

  it("never reads a pipe that another reader emptied first (the read would block the processor)", function()
    -- Two line readers on one blocking pipe, both woken by the same data on
    -- one processor: the one that runs second must wait again, not read.
    -- If it read, the processor would block and the writer never resume.
    local out, code = sh([[timeout 10 build/weft -p 1 -e '
      local weft, ffi = require "weft", require "ffi"
      ffi.cdef "int pipe(int fds[2]); long write(int fd, const char *s, unsigned long n); int close(int fd);"
      local fds = ffi.new("int[2]")
      assert(ffi.C.pipe(fds) == 0)
      local seen = {}
      for _ = 1, 2 do
        weft.go(function()
          for l in weft.io.lines(fds[0]) do seen[#seen + 1] = l end
          seen[#seen + 1] = "EOF"
        end)
      end
      -- main stays runnable (yields), so both readers are woken by one
      -- poll and queued behind it
      for i, l in ipairs { "a", "b", "c" } do
        ffi.C.write(fds[1], l .. "\n", 2)
        while #seen < i do weft.yield() end
      end
      ffi.C.close(fds[1])
      while #seen < 5 do weft.yield() end
      print(table.concat(seen, " "))']])
    assert.are.equal("a b c EOF EOF\n", out)
    assert.are.equal(0, code)
  end)

  it("reads lines of several MB from a pipe, and a last one without newline", function()
    local out, code = sh([[(head -c 5000000 /dev/zero | tr '\0' x; printf '\n\nshort\n'; ]]
      .. [[head -c 3000000 /dev/zero | tr '\0' y) | build/weft -e '
      local weft = require "weft"
      local lens = {}
      for l in weft.io.lines(0) do lens[#lens + 1] = #l .. l:sub(1, 1) end
      print(table.concat(lens, " "))']])
    assert.are.equal(0, code)
    assert.are.equal("5000000x 0 5s 3000000y\n", out)
  end)

  it("reads lines from stdin redirected from a file", function()
    local name = os.tmpname()
    local f = assert(io.open(name, "w"))
    for i = 1, 5000 do f:write("line ", i, "\n") end
    f:close()
    local out, code = sh("build/weft -e 'local weft = require \"weft\"; local n, last = 0; "
      .. "for l in weft.io.lines(0) do n = n + 1; last = l end; print(n, last)' < " .. name)
    os.remove(name)
    assert.are.equal(0, code)
    assert.are.equal("5000\tline 5000\n", out)
  end)
end)
