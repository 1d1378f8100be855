-- examples/logpool: its parser module (the lpeg grammar and the aggregates)
-- run directly, and the whole example through the weft binary.
package.path = "examples/logpool/?.lua;" .. package.path
local logparse = require "logparse"

local GOOD = '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" 200 5120'
local NO_BYTES = '192.168.0.17 ident bob [01/Jan/2024:00:00:59 -0130] "HEAD /a/b?c=d HTTP/1.0" 304 -'

describe("logparse.parse", function()
  it("reads every field of a line", function()
    local ip, time, method, path, status, bytes = logparse.parse(GOOD)
    assert.are.equal("10.1.2.3", ip)
    assert.are.equal("14/Nov/2023:22:13:20 +0000", time)
    assert.are.equal("GET", method)
    assert.are.equal("/index.html", path)
    assert.are.equal(200, status)
    assert.are.equal(5120, bytes)
  end)

  it("reads bytes '-' as 0, ident and user names, a query, and a CR at the end", function()
    local ip, time, method, path, status, bytes = logparse.parse(NO_BYTES .. "\r")
    assert.are.same({ "192.168.0.17", "01/Jan/2024:00:00:59 -0130", "HEAD", "/a/b?c=d", 304, 0 },
      { ip, time, method, path, status, bytes })
  end)

  it("rejects malformed lines", function()
    local bad = {
      "",
      "garbage",
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000]',                                  -- truncated
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] GET /index.html HTTP/1.1 200 17',  -- no quotes
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" OK 17', -- status
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" 2000 17',
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" 200 17 x',
      '10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "get /index.html HTTP/1.1" 200 17',
      '10.1.2.3 - - [2023-11-14 22:13:20] "GET /index.html HTTP/1.1" 200 17',       -- time
      '10.1.2 - - [14/Nov/2023:22:13:20 +0000] "GET /index.html HTTP/1.1" 200 17',  -- ip
      '1000.1.2.3 - - [14/Nov/2023:22:13:20 +0000] "GET / HTTP/1.1" 200 17',
      GOOD .. "\n" .. GOOD,                                                         -- two lines
    }
    for _, line in ipairs(bad) do
      assert.is_nil(logparse.parse(line), line)
    end
  end)
end)

describe("logparse.add", function()
  it("counts the lines, malformed ones, statuses, paths and bytes of a batch", function()
    local batch = table.concat({ GOOD, "garbage", NO_BYTES, "", GOOD }, "\n")
    local stats = logparse.add(logparse.new_stats(), batch)
    assert.are.same({
      lines = 5, errors = 2, bytes = 10240,
      status = { [200] = 2, [304] = 1 },
      paths = { ["/index.html"] = 2, ["/a/b?c=d"] = 1 },
    }, stats)
  end)

  it("takes a malformed last line, a trailing CR and an empty batch", function()
    local stats = logparse.add(logparse.new_stats(), GOOD .. "\r\n" .. GOOD .. " 1")
    assert.are.equal(2, stats.lines)
    assert.are.equal(1, stats.errors)
    assert.are.equal(5120, stats.bytes)
    logparse.add(stats, "")
    assert.are.equal(2, stats.lines)
  end)

  it("accumulates batches; merge adds aggregates", function()
    local a = logparse.add(logparse.new_stats(), GOOD)
    logparse.add(a, NO_BYTES .. "\nbad")
    local b = logparse.add(logparse.new_stats(), GOOD .. "\n" .. GOOD)
    local total = logparse.merge(logparse.merge(logparse.new_stats(), a), b)
    assert.are.same({
      lines = 5, errors = 1, bytes = 3 * 5120,
      status = { [200] = 3, [304] = 1 },
      paths = { ["/index.html"] = 3, ["/a/b?c=d"] = 1 },
    }, total)
  end)
end)

describe("logparse.top", function()
  it("gives the most frequent keys first, ties in key order", function()
    local counts = { ["/a"] = 3, ["/b"] = 7, ["/c"] = 3, ["/d"] = 1, ["/e"] = 9 }
    assert.are.same({ { "/e", 9 }, { "/b", 7 }, { "/a", 3 } }, logparse.top(counts, 3))
    assert.are.equal(5, #logparse.top(counts, 10))
  end)
end)

describe("examples/logpool/main.lua", function()
  -- What the example prints for 20,000 generated lines, on any number of
  -- processors, but for its last line (the timing).
  local EXPECTED = [[
input: 20000 generated lines (seed 20231114)
lines           20000
parsed          19954
malformed          46
bytes       479752379
status 200      17949
status 301        209
status 304        982
status 404        598
status 500        216
top paths
  1. /                        5217
  2. /index.html              1350
  3. /api/v1/items             939
  4. /static/app.js            730
  5. /static/app.css           595
]]

  it("prints the same summary on 1 and 2 processors", function()
    for _, procs in ipairs({ 1, 2 }) do
      local f = io.popen("build/weft -p " .. procs .. " examples/logpool/main.lua 20000 2>&1; echo \"exit=$?\"")
      local out = f:read("*a")
      f:close()
      local summary, timing, code = out:match("^(.*\n)([^\n]*)\nexit=(%d+)\n$")
      assert.are.equal("0", code, out)
      assert.are.equal(EXPECTED, summary)
      assert.matches("^%d+%.%d+ s on " .. procs .. " workers: %d+ lines/s$", timing)
    end
  end)
end)
