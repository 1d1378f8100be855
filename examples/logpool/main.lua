-- examples/logpool/main.lua — a CPU-bound worker pool on isolated
-- goroutines: access-log lines go in batches of 256 over a channel to
-- weft.procs() workers started with weft.spawn, which the scheduler may run
-- in parallel on every processor (each processor has its own LuaJIT VM).
-- Each worker requires the logparse module (an lpeg grammar, built once
-- per VM), parses its batches and sends back its aggregate; the main
-- goroutine merges them and prints the summary.
--
--   build/weft examples/logpool/main.lua [LINES | FILE]
--
-- Without FILE, LINES lines (default 200,000) are generated from a fixed
-- seed, a few of them malformed on purpose. The input is made before the
-- clock starts: the timing covers the pool, from the first spawn to the
-- merged result. Everything printed is the same from run to run, and
-- whatever the number of processors, but the last line, the timing.

-- The modules beside this script, for this VM: first, before any require.
local here = (arg and arg[0] or ""):match("^(.*/)") or "./"
package.path = here .. "?.lua;" .. package.path

local weft = require "weft"
local logparse = require "logparse"

local BATCH = 256
local SEED = 20231114

-- ---- input ----------------------------------------------------------------------

-- Lehmer generator: every product stays below 2^47, exact in a double.
local seed = SEED
local function rand(n) -- 0 .. n - 1
  seed = seed * 48271 % 2147483647
  return seed % n
end

local PATHS = {
  "/", "/index.html", "/api/v1/items", "/static/app.js", "/static/app.css",
  "/login", "/api/v1/cart", "/favicon.ico", "/search", "/api/v1/users/me",
  "/about", "/static/logo.png", "/api/v1/orders", "/checkout", "/robots.txt",
  "/blog", "/blog/feed.xml", "/api/v1/health", "/contact", "/logout",
}
local USERS = { "alice", "bob", "carol" }

local function method()
  local r = rand(100)
  return r < 85 and "GET" or r < 95 and "POST" or r < 98 and "HEAD" or "PUT"
end

local function status()
  local r = rand(1000)
  return r < 900 and 200 or r < 950 and 304 or r < 980 and 404 or r < 990 and 301 or 500
end

local function path()
  if rand(10) < 3 then return "/items/" .. rand(5000) end -- a long tail
  local u = rand(10000) / 10000
  return PATHS[1 + math.floor(#PATHS * u * u * u)] -- skewed to the first ones
end

local stamp_second, stamp = nil, nil
local function timestamp(t)
  if t ~= stamp_second then
    stamp_second, stamp = t, os.date("!%d/%b/%Y:%H:%M:%S +0000", t)
  end
  return stamp
end

-- Malformed lines, of three kinds the parser must reject.
local function malformed(ip, time, m, p)
  local kind = rand(3)
  if kind == 0 then return ("%s - - [%s]"):format(ip, time) end -- truncated
  if kind == 1 then return ("%s - - [%s] %s %s HTTP/1.1 200 17"):format(ip, time, m, p) end
  return ("%s - - [%s] \"%s %s HTTP/1.1\" OK 17"):format(ip, time, m, p)
end

-- Line i of the generated log, and whether it is malformed.
local function log_line(i)
  local ip = ("10.%d.%d.%d"):format(rand(4), rand(256), 1 + rand(254))
  local user = rand(20) == 0 and USERS[1 + rand(#USERS)] or "-"
  local time = timestamp(1700000000 + math.floor(i / 25))
  local m, p, code = method(), path(), status()
  if rand(400) == 0 then return malformed(ip, time, m, p), true end
  local size = code == 304 and "-" or tostring(200 + rand(50000))
  return ('%s - %s [%s] "%s %s HTTP/1.1" %d %s'):format(ip, user, time, m, p, code, size), false
end

-- Collects lines into batches of BATCH lines joined by "\n".
local function batcher()
  local batches, lines, n = {}, {}, 0
  local function add(line)
    n = n + 1
    lines[n] = line
    if n == BATCH then
      batches[#batches + 1] = table.concat(lines, "\n")
      n = 0
    end
  end
  local function finish()
    if n > 0 then batches[#batches + 1] = table.concat(lines, "\n", 1, n) end
    return batches
  end
  return add, finish
end

-- Returns the batches, the line count and the number of malformed lines
-- (nil when unknown, for a file).
local function read_input(source)
  local add, finish = batcher()
  local lines = tonumber(source or 200000)
  if lines then
    local bad = 0
    for i = 1, lines do
      local line, is_bad = log_line(i)
      add(line)
      if is_bad then bad = bad + 1 end
    end
    io.write(("input: %d generated lines (seed %d)\n"):format(lines, SEED))
    return finish(), lines, bad
  end
  local f, err = io.open(source)
  if not f then
    io.stderr:write("logpool: ", err, "\n")
    os.exit(1)
  end
  local count = 0
  for line in f:lines() do
    add(line)
    count = count + 1
  end
  f:close()
  io.write(("input: %d lines from %s\n"):format(count, source))
  return finish(), count, nil
end

-- ---- the pool -------------------------------------------------------------------

-- Runs in an isolate, possibly in another VM: it needs only its arguments
-- and the modules it requires there. That VM may have started before this
-- script extended package.path, so the worker makes sure of it itself.
local function work(moddir, batches, results)
  local dir = moddir .. "?.lua"
  if not package.path:find(dir, 1, true) then package.path = dir .. ";" .. package.path end
  local parse = require "logparse"
  local stats = parse.new_stats()
  for batch in batches:range() do parse.add(stats, batch) end
  results:send(stats)
end

local batches_in, nlines, nbad = read_input(arg[1])

local started = weft.now()
local workers = weft.procs()
local batches, results = weft.chan(4 * workers), weft.chan(workers)
for _ = 1, workers do weft.spawn(work, here, batches, results) end
for i = 1, #batches_in do batches:send(batches_in[i]) end
batches:close()
local total = logparse.new_stats()
for _ = 1, workers do logparse.merge(total, results:recv()) end
local elapsed = weft.now() - started

if total.lines ~= nlines then
  error(("the workers saw %d lines of %d"):format(total.lines, nlines))
end
if nbad and total.errors ~= nbad then
  error(("%d lines rejected, but %d were generated malformed"):format(total.errors, nbad))
end

-- ---- summary --------------------------------------------------------------------

local codes = {}
for code in pairs(total.status) do codes[#codes + 1] = code end
table.sort(codes)

io.write(("lines      %10d\n"):format(total.lines))
io.write(("parsed     %10d\n"):format(total.lines - total.errors))
io.write(("malformed  %10d\n"):format(total.errors))
io.write(("bytes      %10d\n"):format(total.bytes))
for _, code in ipairs(codes) do
  io.write(("status %d %10d\n"):format(code, total.status[code]))
end
io.write("top paths\n")
for rank, entry in ipairs(logparse.top(total.paths, 5)) do
  io.write(("  %d. %-20s %8d\n"):format(rank, entry[1], entry[2]))
end
io.write(("%.3f s on %d workers: %.0f lines/s\n"):format(elapsed, workers, total.lines / elapsed))
